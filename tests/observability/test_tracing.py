"""OpenTelemetry: a W3C ``traceparent`` is continued, one span per request with child
spans for authentication, rate limit and model, the trace id in the JSON log line; OTLP
export to a collector when OTEL_EXPORTER_OTLP_ENDPOINT is set; nothing at all otherwise."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from app.main import create_app
from app.settings import Settings
from monitoring.logs import JsonFormatter
from tests.support.app_server import app_env, run_cli, running_app
from tests.support.houses import V1_HOUSE

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def settings_in(tmp_path: Path, model_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "var_dir": tmp_path / "var",
        "model_dir": model_dir,
        "redis_url": None,
        "drift_refresh_seconds": 0,
    }
    return Settings(_env_file=None, **(values | overrides))


@pytest.fixture
async def traced_app(
    tmp_path: Path, trained_model_dir: Path, exporter: InMemorySpanExporter
) -> AsyncIterator[FastAPI]:
    app = create_app(settings_in(tmp_path, trained_model_dir), span_exporter=exporter)
    async with app.router.lifespan_context(app):
        yield app


def http(app: FastAPI, **headers: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("192.0.2.20", 4000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver", headers=headers)


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    return {span.name: span for span in spans}


@pytest.mark.anyio
async def test_a_request_continues_the_callers_trace_with_child_spans(
    traced_app: FastAPI, exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    _, key = traced_app.state.services.store.api_keys.create("tracing", "predict")
    caplog.set_level(logging.INFO, logger="app.requests")
    async with http(traced_app, **{"X-API-Key": key}) as client:
        answer = await client.post(
            "/v1/predict", json=V1_HOUSE, headers={"traceparent": TRACEPARENT}
        )
    assert answer.status_code == 200, answer.text

    spans = by_name(exporter.get_finished_spans())
    assert {"POST /v1/predict", "authenticate", "rate_limit", "model"} <= spans.keys()
    server = spans["POST /v1/predict"]
    assert server.kind == SpanKind.SERVER
    assert f"{server.context.trace_id:032x}" == TRACE_ID  # the caller's trace...
    assert server.parent is not None
    assert f"{server.parent.span_id:016x}" == PARENT_ID  # ...under the caller's span
    assert server.attributes is not None
    assert server.attributes["http.route"] == "/v1/predict"
    assert server.attributes["http.response.status_code"] == 200
    for child in ("authenticate", "rate_limit", "model"):
        span = spans[child]
        assert span.parent is not None, child
        assert span.parent.span_id == server.context.span_id, child
        assert span.context.trace_id == server.context.trace_id, child

    [record] = [r for r in caplog.records if r.name == "app.requests"]
    event = json.loads(JsonFormatter().format(record))
    assert event["trace_id"] == TRACE_ID
    assert event["span_id"] == f"{server.context.span_id:016x}"
    assert event["request_id"] == answer.headers["X-Request-ID"]


@pytest.mark.anyio
async def test_without_traceparent_a_new_trace_starts(
    traced_app: FastAPI, exporter: InMemorySpanExporter
) -> None:
    async with http(traced_app) as client:
        refused = await client.post("/v1/predict", json=V1_HOUSE, headers={"traceparent": "junk"})
    assert refused.status_code == 401
    spans = by_name(exporter.get_finished_spans())
    server = spans["POST /v1/predict"]
    assert server.parent is None
    assert f"{server.context.trace_id:032x}" != TRACE_ID
    assert "authenticate" in spans
    assert "model" not in spans  # refused before the model


@pytest.mark.anyio
async def test_off_the_log_line_still_carries_the_callers_trace_id(
    tmp_path: Path, trained_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(settings_in(tmp_path, trained_model_dir))
    caplog.set_level(logging.INFO, logger="app.requests")
    async with app.router.lifespan_context(app), http(app) as client:
        await client.get("/healthz", headers={"traceparent": TRACEPARENT})
        await client.get("/healthz")
    first, second = (
        json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name == "app.requests"
    )
    assert first["trace_id"] == TRACE_ID
    assert len(second["trace_id"]) == 32
    assert second["trace_id"] != TRACE_ID


def test_off_means_no_sdk_is_loaded(tmp_path: Path, trained_model_dir: Path) -> None:
    """Without OTEL_EXPORTER_OTLP_ENDPOINT a served request never loads the tracing SDK
    or an exporter. (redis-py 8 imports ``opentelemetry.sdk.metrics`` by itself when the SDK
    is installed, for its own optional metrics; it stays unconfigured.)"""
    script = f"""
import sys, httpx, anyio
from pathlib import Path
from app.main import create_app
from app.settings import Settings
app = create_app(Settings(_env_file=None, var_dir=Path({str(tmp_path / "var")!r}),
                          model_dir=Path({str(trained_model_dir)!r}), drift_refresh_seconds=0))
async def main():
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/healthz")).status_code == 200
anyio.run(main)
tracing = ("opentelemetry.sdk.trace", "opentelemetry.exporter")
loaded = sorted(m for m in sys.modules if m.startswith(tracing))
print(",".join(loaded) or "none")
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=app_env({}),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert result.stdout.strip().splitlines()[-1] == "none"


class Collector(ThreadingHTTPServer):
    """An OTLP/HTTP receiver on loopback: keeps every export request it gets."""

    def __init__(self) -> None:
        self.exports: list[ExportTraceServiceRequest] = []
        self.paths: list[str] = []
        super().__init__(("127.0.0.1", 0), _Receive)


class _Receive(BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:  # http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.paths.append(self.path)
        self.server.exports.append(ExportTraceServiceRequest.FromString(body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:  # quiet
        return


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.slow
def test_a_real_server_exports_over_otlp(
    tmp_path: Path, trained_model_dir: Path, collector: Collector
) -> None:
    root = tmp_path / "server"
    root.mkdir()
    endpoint = f"http://127.0.0.1:{collector.server_address[1]}"
    env = app_env(
        {
            "VAR_DIR": str(root / "var"),
            "MODEL_DIR": str(trained_model_dir),
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        }
    )
    created = run_cli(
        env, root, "keys", "create", "--owner", "otel", "--scopes", "predict", "--json"
    )
    key = json.loads(created.stdout)["api_key"]
    with running_app(root, env) as server:
        answer = httpx.post(
            f"{server.base_url}/v1/predict",
            json=V1_HOUSE,
            headers={"X-API-Key": key, "traceparent": TRACEPARENT},
            timeout=10,
        )
        assert answer.status_code == 200
    # Stopped (SIGTERM): the lifespan's end exported what the batch processor held.
    assert collector.paths
    assert set(collector.paths) == {"/v1/traces"}
    spans = [
        (span.name, span.trace_id.hex())
        for export in collector.exports
        for resource in export.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    names = {name for name, trace in spans if trace == TRACE_ID}
    assert {"POST /v1/predict", "authenticate", "rate_limit", "model"} <= names
    services = {
        attribute.value.string_value
        for export in collector.exports
        for resource in export.resource_spans
        for attribute in resource.resource.attributes
        if attribute.key == "service.name"
    }
    assert services == {"housing-api"}
