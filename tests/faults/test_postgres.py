"""PostgreSQL taken away from a running service under load: stopped, then hung.

One ``housing-api serve`` (uvicorn) on a PostgreSQL of this module's own, with the
prediction log on (it writes to the same database). Five callers, each on its own
keep-alive connection: predictions with an API key and with a bearer token that the
worker has already verified, predictions with API keys it has never seen (one new key
per request), ``POST /token``, and ``/readyz``. Figures asserted: answers by status,
no transport error (reset or closed connection), 503 + ``Retry-After`` only while the
store is down and only where it is needed, the grace keeping verified callers at 200,
one log event down and one up, no traceback; under SIGSTOP, answers within the
normal latency plus the store's timeouts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from auth.wiring import open_store
from migrations import upgrade_schema
from tests.faults.support import (
    Exchange,
    Load,
    deployment_config,
    messages,
    percentile,
    transport_errors,
)
from tests.support.app_server import AppServer, app_env, running_app
from tests.support.houses import V1_HOUSE
from tests.support.postgres import PostgresServer

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

FRESH_KEYS = 400
DOWN = "credential store unreachable"
UP = "credential store reachable again"
# The store engine's bounds (db.engine.Timeouts): a pooled connection's ping (1 s)
# then a new connection's handshake (2 s), plus scheduling on a loaded 2-core machine.
HANG_BOUND_S = 1.0 + 2.0 + 1.0


@dataclass
class Deployment:
    server: AppServer
    postgres: PostgresServer
    api_key: str
    token: str
    client_id: str
    client_secret: str
    fresh_keys: list[str]

    def start_load(self) -> Load:
        load = Load(self.server.base_url)
        key, token, fresh = self.api_key, self.token, iter(self.fresh_keys)
        load.caller("key", lambda c, _: predict(c, {"X-API-Key": key}))
        load.caller("bearer", lambda c, _: predict(c, {"Authorization": f"Bearer {token}"}))
        load.caller("fresh", lambda c, _: predict(c, {"X-API-Key": next(fresh)}), pause=0.05)
        load.caller(
            "token",
            lambda c, _: c.post(
                "/token",
                data={"grant_type": "client_credentials"},
                auth=(self.client_id, self.client_secret),
            ),
            pause=0.05,
        )
        load.caller("readyz", lambda c, _: c.get("/readyz"), pause=0.1)
        return load


def predict(client: httpx.Client, headers: dict[str, str]) -> httpx.Response:
    return client.post("/v1/predict", json=V1_HOUSE, headers=headers)


@pytest.fixture(scope="module")
def deployment(
    fault_postgres: PostgresServer,
    trained_model_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("faults-postgres")
    database_url = fault_postgres.create_database("faults")
    values, settings = deployment_config(
        root, trained_model_dir, database_url, STORE_OUTAGE_GRACE_SECONDS="60"
    )
    with open_store(settings, upgrade_schema) as store:
        api_key = store.api_keys.create("faults", "predict")[1]
        fresh = [store.api_keys.create(f"fresh-{n}", "predict")[1] for n in range(FRESH_KEYS)]
        client_id, secret = store.clients.create("faults-app", "predict")
    with running_app(root / "server", app_env(values)) as server:
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            answer = client.post(
                "/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
            )
            token = answer.json()["access_token"]
        yield Deployment(server, fault_postgres, api_key, token, client_id, secret, fresh)


def assert_no_server_error_but_503(exchanges: list[Exchange]) -> None:
    assert transport_errors(exchanges) == [], transport_errors(exchanges)[:5]
    wrong = [e for e in exchanges if e.status is not None and e.status >= 500 and e.status != 503]
    assert wrong == [], wrong[:5]
    # Every 503 says when to retry (/readyz's are for load balancers, not clients).
    missing = [
        e for e in exchanges if e.status == 503 and e.caller != "readyz" and not e.retry_after
    ]
    assert missing == [], missing[:5]


def test_postgres_stopped_and_restarted_under_load(deployment: Deployment) -> None:
    server, postgres = deployment.server, deployment.postgres
    events_before = len(messages(server.stderr, DOWN)), len(messages(server.stderr, UP))
    load = deployment.start_load()
    try:
        load.wait_for("fresh", lambda e: e.status == 200, timeout=10)
        stopped = load.now() + 1.0
        load.sleep(1.0)
        postgres.stop()
        load.sleep(4.0)
        restarted = load.now()
        postgres.start()
        ready = load.wait_for("readyz", lambda e: e.status == 200 and e.at > restarted, timeout=15)
        load.sleep(2.0)
    finally:
        load.stop()
        postgres.start()
    everything = load.exchanges
    summary = load.summary()
    print(
        f"\nPostgreSQL stopped at {stopped:.1f}s, restarted at {restarted:.1f}s, /readyz 200 at "
        f"{ready:.1f}s; answers by caller and status: {summary}"
    )
    assert_no_server_error_but_503(everything)
    # The grace: callers this worker had verified never noticed.
    for caller in ("key", "bearer"):
        assert {e.status for e in load.of(caller)} == {200}, summary[caller]
    # Whoever needed the store got 503 + Retry-After while it was down, and only then.
    outage = (stopped - 0.5, ready + 0.5)
    for caller, shape in (("fresh", "problem"), ("token", "oauth")):
        refused = [e for e in load.of(caller) if e.status == 503]
        assert refused, summary[caller]
        assert all(outage[0] <= e.at <= outage[1] for e in refused), (outage, refused[:3])
        for e in refused:
            if shape == "oauth":
                assert e.body["error"] == "temporarily_unavailable"
            else:
                assert e.body["type"].endswith("store-unavailable")
        others = [e.status for e in load.of(caller) if e.status != 503]
        assert set(others) == {200}, summary[caller]
        assert load.of(caller, ready + 1.0), f"{caller} sent nothing after the recovery"
    probes = load.of("readyz", stopped + 1.5, restarted)
    assert probes
    assert all(p.status == 503 for p in probes)
    assert all(p.body["checks"]["database"] == "failing" for p in probes)
    # One event down, one up; no traceback anywhere (the prediction log writer too).
    stderr = server.stderr
    assert len(messages(stderr, DOWN)) == events_before[0] + 1
    assert len(messages(stderr, UP)) == events_before[1] + 1
    assert "Traceback" not in stderr


def test_postgres_hung_with_sigstop(deployment: Deployment) -> None:
    server, postgres = deployment.server, deployment.postgres
    load = deployment.start_load()
    try:
        load.wait_for("fresh", lambda e: e.status == 200, timeout=10)
        load.sleep(2.0)
        hung = load.now()
        postgres.pause()
        load.sleep(5.0)
        resumed = load.now()
        postgres.resume()
        ready = load.wait_for("readyz", lambda e: e.status == 200 and e.at > resumed, timeout=15)
        load.sleep(2.0)
    finally:
        load.stop()
        postgres.resume()
    summary = load.summary()
    assert_no_server_error_but_503(load.exchanges)
    before = [e.seconds for c in ("key", "bearer") for e in load.of(c, 0, hung)]
    during = [e.seconds for c in ("key", "bearer") for e in load.of(c, hung, resumed)]
    normal = percentile(before, 0.99)
    print(
        f"\nPostgreSQL hung {hung:.1f}s to {resumed:.1f}s, /readyz 200 again at {ready:.1f}s; "
        f"verified callers: p99 {normal * 1000:.0f} ms before, during the hang "
        f"p50 {percentile(during, 0.5) * 1000:.0f} ms, p99 {percentile(during, 0.99) * 1000:.0f}"
        f" ms, max {max(during) * 1000:.0f} ms over {len(during)} answers "
        f"({len(before)} before); by caller and status: {summary}"
    )
    for caller in ("key", "bearer"):
        assert {e.status for e in load.of(caller)} == {200}, summary[caller]
    # Only the reads in flight when it hung wait, and no longer than the timeouts;
    # once the store is known down every caller is answered at its normal pace.
    assert max(during) < normal + HANG_BOUND_S
    slow = [s for s in during if s > normal + 0.5]
    assert len(slow) <= 0.05 * len(during), (len(slow), len(during))
    assert len(during) >= 0.5 * len(before) * (resumed - hung) / hung
    for caller in ("fresh", "token"):
        refused = [e for e in load.of(caller) if e.status == 503]
        assert refused, summary[caller]
        assert all(hung - 0.5 <= e.at <= ready + 0.5 for e in refused)
    assert "Traceback" not in server.stderr
