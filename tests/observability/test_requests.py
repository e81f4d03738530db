"""Request ids, Server-Timing, JSON logs and /metrics, seen from a client and a scraper."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from app.settings import Settings
from monitoring.logs import REDACTED, JsonFormatter
from tests.support.houses import V1_HOUSE

pytestmark = pytest.mark.anyio

HOUSE = V1_HOUSE


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def app(tmp_path: Path, trained_model_dir: Path) -> AsyncIterator[FastAPI]:
    settings = Settings(
        _env_file=None,
        var_dir=tmp_path / "var",
        model_dir=trained_model_dir,
        rate_limit_predict="3/minute",
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


def http(app: FastAPI, **headers: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("192.0.2.10", 4000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver", headers=headers)


def key(app: FastAPI, scopes: str) -> str:
    return str(app.state.services.store.api_keys.create("observability", scopes)[1])


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_a_well_formed_request_id_is_kept(app: FastAPI) -> None:
    async with http(app) as client:
        answer = await client.get("/healthz", headers={"X-Request-ID": "edge-7f3a9c01"})
    assert answer.headers["X-Request-ID"] == "edge-7f3a9c01"


@pytest.mark.parametrize("offered", [None, "short", "x" * 200, "has space in it", "new\tline-ish"])
async def test_a_missing_or_malformed_request_id_is_replaced(
    app: FastAPI, offered: str | None
) -> None:
    headers = {"X-Request-ID": offered} if offered else {}
    async with http(app) as client:
        answer = await client.get("/healthz", headers=headers)
    assert len(answer.headers["X-Request-ID"]) == 32
    assert answer.headers["X-Request-ID"] != offered


async def test_every_answer_carries_id_and_server_timing(app: FastAPI) -> None:
    async with http(app) as client:
        answers = [
            await client.get("/healthz"),
            await client.post("/v1/predict", json=HOUSE),  # 401
            await client.get("/nowhere"),  # 404
        ]
    for answer in answers:
        assert answer.headers["X-Request-ID"]
        assert answer.headers["Server-Timing"].startswith("app;dur=")


async def test_one_json_event_per_request_without_secrets(
    app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    api_key = key(app, "predict")
    caplog.set_level(logging.INFO, logger="app.requests")
    async with http(app, **{"X-API-Key": api_key}) as client:
        answer = await client.post(
            "/v1/predict", json=HOUSE, headers={"X-Request-ID": "trace-0123456789"}
        )
    [record] = [r for r in caplog.records if r.name == "app.requests"]
    event = json.loads(JsonFormatter().format(record))
    assert event["request_id"] == "trace-0123456789" == answer.headers["X-Request-ID"]
    assert event["route"] == "/v1/predict"
    assert event["status"] == 200
    assert event["principal"] == f"api_key:{api_key.split('_')[1]}"
    assert event["model_version"] == "v1"
    assert event["latency_ms"] > 0
    assert api_key not in json.dumps(event)


def test_the_formatter_scrubs_anything_shaped_like_a_secret() -> None:
    secrets = [
        "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl",
        "hpa_abcdefghijkl_" + "S" * 43,
        "client_secret=hunter2hunter2",
        "password=correct-horse",
        "Basic Y2xpZW50OnNlY3JldA==",
    ]
    for secret in secrets:
        record = logging.makeLogRecord({"msg": f"oops {secret} end", "levelno": logging.ERROR})
        line = JsonFormatter().format(record)
        assert secret not in line
        assert REDACTED in line


async def test_metrics_need_the_metrics_scope(app: FastAPI) -> None:
    async with http(app) as anonymous:
        assert (await anonymous.get("/metrics")).status_code == 401
    async with http(app, **{"X-API-Key": key(app, "predict")}) as predictor:
        assert (await predictor.get("/metrics")).status_code == 403
    async with http(app, **{"X-API-Key": key(app, "metrics")}) as scraper:
        answer = await scraper.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")


async def test_metrics_accept_a_bearer_token(app: FastAPI) -> None:
    client_id, secret = app.state.services.store.clients.create(None, "metrics")
    async with http(app) as client:
        token = (
            await client.post(
                "/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
            )
        ).json()["access_token"]
        answer = await client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200


async def test_metrics_count_requests_predictions_failures_and_limits(app: FastAPI) -> None:
    async with http(app, **{"X-API-Key": key(app, "predict")}) as caller:
        for _ in range(2):
            assert (await caller.post("/v1/predict", json=HOUSE)).status_code == 200
        batch = await caller.post("/v1/predict/batch", json={"instances": [HOUSE] * 5})
        assert batch.status_code == 200
        assert (await caller.post("/v1/predict", json=HOUSE)).status_code == 429
    async with http(app, **{"X-API-Key": "hpa_aaaaaaaaaaaa_" + "B" * 43}) as forger:
        assert (await forger.post("/v1/predict", json=HOUSE)).status_code == 401
    async with http(app, **{"X-API-Key": key(app, "metrics")}) as scraper:
        values = samples((await scraper.get("/metrics")).text)
    ok = ("http_requests_total", (("method", "POST"), ("route", "/v1/predict"), ("status", "200")))
    assert values[ok] == 2
    assert values[("predictions_total", (("model_version", "v1"),))] == 7
    assert values[("auth_failures_total", (("reason", "invalid_api_key"),))] == 1
    assert values[("rate_limited_total", (("route", "/v1/predict"),))] == 1
    latency = (
        "http_request_duration_seconds_count",
        (("method", "POST"), ("route", "/v1/predict")),
    )
    assert values[latency] == 4  # 2 ok, 1 refused by the limiter, 1 refused credential
    infos = [k for k in values if k[0] == "model_info"]
    assert {dict(labels)["version"] for _, labels in infos} == {"v1", "v2"}
    assert all(len(dict(labels)["sha256"]) == 64 for _, labels in infos)


def test_route_labels_use_templates_not_raw_paths() -> None:
    """Unknown paths share one label, so scanners cannot explode the series count."""
    from app.request_context import _route

    assert _route({"type": "http"}) == "unmatched"
    assert _route({"route": type("R", (), {"path": "/v1/predict"})()}) == "/v1/predict"


async def test_one_process_has_process_and_python_metrics(app: FastAPI) -> None:
    async with http(app, **{"X-API-Key": key(app, "metrics")}) as scraper:
        values = samples((await scraper.get("/metrics")).text)
    names = {name for name, _ in values}
    assert {"process_resident_memory_bytes", "process_cpu_seconds_total"} <= names
    assert {"python_gc_collections_total", "python_info"} <= names
