"""A real ``housing-api serve``, started and stopped: its whole stderr is JSON lines, in
both modes (uvicorn alone, gunicorn's master and uvicorn workers), with no ANSI colour,
no shutdown noise, and the request and trace ids in every request event."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.app_server import app_env, run_cli, running_app
from tests.support.houses import V1_HOUSE

pytestmark = pytest.mark.slow

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"


def json_lines(stderr: str) -> list[dict[str, Any]]:
    events = []
    for number, line in enumerate(stderr.splitlines(), 1):
        assert line.strip(), f"line {number} is empty"
        event = json.loads(line)  # fails the test on any line that is not JSON
        assert isinstance(event, dict), line
        events.append(event)
    return events


@pytest.mark.parametrize("workers", [1, 2], ids=["uvicorn", "gunicorn"])
def test_a_start_and_stop_logs_only_json(
    tmp_path: Path, trained_model_dir: Path, workers: int
) -> None:
    root = tmp_path / "server"
    root.mkdir()
    env = app_env({"VAR_DIR": str(root / "var"), "MODEL_DIR": str(trained_model_dir)})
    created = run_cli(
        env, root, "keys", "create", "--owner", "logs", "--scopes", "predict", "--json"
    )
    key = json.loads(created.stdout)["api_key"]
    with (
        running_app(root, env, workers=workers) as server,
        httpx.Client(base_url=server.base_url, timeout=10) as client,
    ):
        traced = client.get("/healthz", headers={"traceparent": TRACEPARENT})
        predicted = client.post("/v1/predict", json=V1_HOUSE, headers={"X-API-Key": key})
        assert predicted.status_code == 200
        refused = client.post("/v1/predict", json=V1_HOUSE)
        assert refused.status_code == 401
    stderr = server.stderr

    events = json_lines(stderr)
    assert "\x1b" not in stderr  # no ANSI colour escapes anywhere
    assert not any("color_message" in event for event in events)
    assert "Error while closing socket" not in stderr
    messages = [event["message"] for event in events]
    assert any(m.startswith("Finished server process") for m in messages)
    if workers > 1:  # gunicorn's master logs JSON too, from its start to its end
        assert any(m.startswith("Starting gunicorn") for m in messages)
        assert any(m.startswith("Booting worker with pid") for m in messages)
        assert "Shutting down: Master" in messages
        assert any(m.startswith("REDIS_URL is unset") for m in messages)
    for event in events:
        assert {"time", "level", "logger", "message"} <= event.keys(), event

    requests = {e["request_id"]: e for e in events if e["message"] == "request"}
    assert len(requests) >= 3  # ours, and the harness's /healthz probes
    for event in requests.values():
        assert len(event["trace_id"]) == 32, event
    assert requests[traced.headers["X-Request-ID"]]["trace_id"] == TRACE_ID
    assert requests[predicted.headers["X-Request-ID"]]["status"] == 200
    assert requests[refused.headers["X-Request-ID"]]["status"] == 401
