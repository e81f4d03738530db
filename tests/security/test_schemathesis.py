"""Schemathesis against the app's own OpenAPI document, in process, with every check.

The engine is the one ``schemathesis run`` drives: every phase (examples, coverage,
fuzzing, stateful), positive and negative data, and every built-in check (server
errors; status code, content type, header and response schema conformance;
positive data acceptance and negative data rejection; ignored auth, which re-sends
each accepted request without and with invalid credentials; missing required
headers; unsupported methods and their ``Allow``; use after free and resource
availability on the key routes). It runs three times: with an API key holding
every scope, with a bearer token holding every scope, and without credentials.

Zero failures is the bar. A mismatch is fixed in the app or in what its OpenAPI
document declares, never by switching a check off (none is switched off here).

``make test`` runs a bounded number of examples per operation; ``make fuzz`` runs
the same tests with ``SCHEMATHESIS_MAX_EXAMPLES`` raised and a fresh seed.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events
from schemathesis.python import asgi

from tests.security.conftest import ALL_SCOPES_TEXT

MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "25"))
SEED = int(os.environ.get("SCHEMATHESIS_SEED", "20231"))

# Every check the engine has for an OpenAPI schema (``max_response_time`` needs a
# budget and is not a correctness check). ``object_level_authorization`` is a no-op
# with one identity per run; tests/keys/test_self_service.py covers BOLA directly.
CHECKS = frozenset(
    {
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "positive_data_acceptance",
        "negative_data_rejection",
        "ignored_auth",
        "missing_required_header",
        "unsupported_method",
        "allow_header_conformance",
        "use_after_free",
        "ensure_resource_availability",
        "object_level_authorization",
    }
)
PHASES = ("examples", "coverage", "fuzzing", "stateful")


@dataclass
class Report:
    """What one engine run did and found."""

    cases: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    checks: set[str] = field(default_factory=set)
    phases: set[str] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def problems(self) -> str:
        return "\n\n".join([*self.failures, *self.errors])


def run_schemathesis(app: FastAPI, headers: dict[str, str]) -> Report:
    config: dict[str, Any] = {
        "seed": SEED,
        "generation": {"mode": "all", "max-examples": MAX_EXAMPLES},
        "checks": {"enabled": True},
        "phases": {name: {"enabled": True} for name in PHASES},
    }
    if headers:
        config["headers"] = headers
    schema = schemathesis.openapi.from_asgi(
        "/openapi.json", app, config=SchemathesisConfig.from_dict(config)
    )
    report = Report()
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.PhaseFinished):
            report.phases.add(event.phase.name.value)
        elif isinstance(event, events.ScenarioFinished):
            _record(report, event)
        elif isinstance(event, events.NonFatalError):
            report.errors.append(f"{event.label}: {event.info.format()}")
        elif isinstance(event, events.FatalError):
            report.errors.append(f"fatal: {event.exception!r}")
    return report


def _record(report: Report, event: events.ScenarioFinished) -> None:
    recorder = event.recorder
    for case_id, node in recorder.cases.items():
        if case_id in recorder.interactions:
            report.cases[node.value.operation.label] += 1
    for case_id, nodes in recorder.checks.items():
        for check in nodes:
            report.checks.add(check.name)
            if check.status != Status.FAILURE or check.failure_info is None:
                continue
            failure = check.failure_info.failure
            interaction = recorder.interactions.get(case_id)
            status = (
                interaction.response.status_code if interaction and interaction.response else "-"
            )
            # The curl line is schemathesis's own, with credentials shown as [Filtered].
            report.failures.append(
                f"[{check.name}] {recorder.label}: {failure.title}\n{failure.message}\n"
                f"answered {status}; reproduce: {check.failure_info.code_sample}"
            )


@pytest.fixture(scope="module")
def api(security_app: FastAPI) -> Iterator[FastAPI]:
    """The app with its lifespan running on schemathesis's ASGI event loop."""
    with asgi.get_client(security_app):  # starts the lifespan, which stays up
        yield security_app
    asgi.shutdown_lifespans()


@pytest.fixture(scope="module")
def operations(api: FastAPI) -> set[str]:
    paths: dict[str, dict[str, Any]] = api.openapi()["paths"]
    return {f"{method.upper()} {path}" for path, item in paths.items() for method in item}


@pytest.fixture(scope="module")
def api_key(api: FastAPI) -> str:
    _, key = api.state.services.store.api_keys.create("schemathesis", ALL_SCOPES_TEXT)
    return str(key)


@pytest.fixture(scope="module")
def access_token(api: FastAPI) -> str:
    """A bearer token from the app's own POST /token, for a client holding every scope."""
    client_id, secret = api.state.services.store.clients.create("schemathesis", ALL_SCOPES_TEXT)
    with asgi.get_client(api) as http:
        answer = http.post(
            "/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
        )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def assert_clean(report: Report, operations: set[str]) -> None:
    assert not report.failures, report.problems()
    assert not report.errors, report.problems()
    assert set(report.cases) == operations, "operations never exercised"
    assert report.checks >= CHECKS, f"checks that never ran: {sorted(CHECKS - report.checks)}"
    assert report.phases >= set(PHASES), f"phases skipped: {set(PHASES) - report.phases}"


def test_with_an_api_key_holding_every_scope(
    api: FastAPI, api_key: str, operations: set[str]
) -> None:
    assert_clean(run_schemathesis(api, {"X-API-Key": api_key}), operations)


def test_with_a_bearer_token_holding_every_scope(
    api: FastAPI, access_token: str, operations: set[str]
) -> None:
    assert_clean(run_schemathesis(api, {"Authorization": f"Bearer {access_token}"}), operations)


def test_without_credentials(api: FastAPI, operations: set[str]) -> None:
    assert_clean(run_schemathesis(api, {}), operations)
