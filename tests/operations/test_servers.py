"""The real ``housing-api serve``: SIGTERM under load, SIGHUP reloads, gunicorn workers.

Each test starts the server as a subprocess (tests/support/app_server.py) and talks to
it over TCP. The prediction log is configured to write only when asked (60 s interval,
100k rows), so the rows found after the process exits were written by its shutdown.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, func, select

from app.settings import Settings
from auth.wiring import open_store
from migrations import upgrade_schema
from monitoring.models import TABLE
from monitoring.predictionlog import iter_predictions, make_log_engine, query, stream
from tests.operations.conftest import wait_until
from tests.operations.support import republish
from tests.support.app_server import HOST, app_env, log_events, running_app
from tests.support.houses import V1_HOUSE

pytestmark = pytest.mark.slow

LOAD_THREADS = 4


def server_env(root: Path, model_dir: Path) -> dict[str, str]:
    return app_env(
        {
            "VAR_DIR": str(root / "var"),
            "MODEL_DIR": str(model_dir),
            "RATE_LIMIT_PREDICT": "1000000/minute",
            "MAX_INFLIGHT_PREDICTIONS": "1000",
            "PREDICTION_LOG_FLUSH_MS": "60000",
            "PREDICTION_LOG_FLUSH_ROWS": "100000",
            "DRIFT_REFRESH_SECONDS": "0",
        }
    )


def settings_of(root: Path, model_dir: Path) -> Settings:
    return Settings(_env_file=None, var_dir=root / "var", model_dir=model_dir)


def new_key(root: Path, model_dir: Path, scopes: str) -> str:
    with open_store(settings_of(root, model_dir), upgrade_schema) as store:
        key: str = store.api_keys.create("operations-test", scopes)[1]
    return key


def logged_request_ids(engine: Engine) -> list[str]:
    return [p["request_id"] for row in stream(engine, query()) for p in iter_predictions(row)]


def server_request_events(stderr: str) -> dict[str, int]:
    """request id -> status of every request the app handled, from its JSON log."""
    return {
        event["request_id"]: event["status"]
        for event in log_events(stderr)
        if event.get("message") == "request" and event.get("route") == "/v1/predict"
    }


def read_http_response(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_sigterm_under_load_finishes_what_was_accepted_and_logs_every_answer(
    tmp_path: Path, model_dir: Path
) -> None:
    root = tmp_path / "server"
    key = new_key(root, model_dir, "predict")
    engine = make_log_engine(settings_of(root, model_dir).database_url)
    outcomes: dict[str, int | str] = {}
    stop = threading.Event()

    def load(n: int, base_url: str) -> None:
        with httpx.Client(base_url=base_url, headers={"X-API-Key": key}, timeout=30) as client:
            i = 0
            while not stop.is_set():
                request_id = f"load-{n}-{i:06d}"
                i += 1
                try:
                    answer = client.post(
                        "/v1/predict", json=V1_HOUSE, headers={"X-Request-ID": request_id}
                    )
                except httpx.TransportError as exc:  # the server is going away
                    outcomes[request_id] = type(exc).__name__
                    return
                outcomes[request_id] = answer.status_code

    try:
        with running_app(root, server_env(root, model_dir)) as server:
            # A request in flight at SIGTERM: headers and half its body sent before...
            body = json.dumps(V1_HOUSE).encode()
            slow = socket.create_connection((HOST, server.port), timeout=30)
            slow.sendall(
                b"POST /v1/predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\nX-API-Key: {key}\r\n".encode()
                + b"X-Request-ID: slow-request-0001\r\nConnection: close\r\n\r\n"
                + body[:10]
            )
            threads = [
                threading.Thread(target=load, args=(n, server.base_url))
                for n in range(LOAD_THREADS)
            ]
            for thread in threads:
                thread.start()
            wait_until(lambda: sum(v == 200 for v in outcomes.values()) >= 200, timeout=30)
            with engine.connect() as connection:  # the writer holds everything so far
                assert connection.scalar(select(func.count()).select_from(TABLE)) == 0

            os.kill(server.process.pid, signal.SIGTERM)
            time.sleep(0.5)
            slow.sendall(body[10:])  # ...and the rest after it
            slow_answer = read_http_response(slow)
            slow.close()
            # uvicorn re-raises the SIGTERM it handled once its shutdown is complete.
            assert server.process.wait(timeout=30) in (0, -signal.SIGTERM)
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
            stderr = server.stderr
    finally:
        stop.set()

    assert "Application shutdown complete" in stderr  # the lifespan's shutdown ran
    assert slow_answer.startswith(b"HTTP/1.1 200"), slow_answer[:200]
    outcomes["slow-request-0001"] = 200
    handled = server_request_events(stderr)
    answered = {rid for rid, outcome in outcomes.items() if outcome == 200}
    failed = {rid for rid, outcome in outcomes.items() if not isinstance(outcome, int)}
    assert len(answered) >= 200
    # Every request the app accepted was answered, with the status it logged; the only
    # failures are connections the closing server never took (one per load thread).
    assert {rid: outcomes.get(rid) for rid in handled} == handled
    assert not failed & set(handled)
    assert len(failed) <= LOAD_THREADS
    assert set(handled) == answered
    # Every answer is in the prediction log, written at shutdown.
    logged = logged_request_ids(engine)
    engine.dispose()
    assert sorted(logged) == sorted(answered)


def test_sighup_reloads_the_models_of_a_running_server(tmp_path: Path, model_dir: Path) -> None:
    root = tmp_path / "server"
    key = new_key(root, model_dir, "predict")
    with running_app(root, server_env(root, model_dir)) as server:
        client = httpx.Client(base_url=server.base_url, headers={"X-API-Key": key}, timeout=15)
        with client:
            before = client.get("/v1/model").json()["sha256"]
            new = republish(model_dir, "v1", "release-2")
            os.kill(server.process.pid, signal.SIGHUP)
            wait_until(lambda: client.get("/v1/model").json()["sha256"] == new, timeout=20)
            answer = client.post("/v1/predict", json=V1_HOUSE)
            assert answer.json()["model_sha256"] == new != before
            assert server.process.poll() is None  # SIGHUP did not stop it
    reloads = [e for e in log_events(server.stderr) if e.get("message") == "models reloaded"]
    assert reloads
    assert reloads[0]["source"] == "SIGHUP"


def test_under_gunicorn_a_reload_reaches_every_worker_in_place(
    tmp_path: Path, model_dir: Path
) -> None:
    root = tmp_path / "server"
    key = new_key(root, model_dir, "predict admin")
    headers = {"X-API-Key": key}
    engine = make_log_engine(settings_of(root, model_dir).database_url)
    with running_app(root, server_env(root, model_dir), workers=2) as server:
        workers = set(server.processes())
        new = republish(model_dir, "v1", "release-2")
        answer, _pid = server.request_from_worker("POST", "/admin/models/reload", headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.json()["other_workers_signalled"] == 1

        def every_worker_serves_the_new_model() -> bool:
            seen = {}
            for _ in range(12):
                response, pid = server.get_from_worker("/v1/model", headers=headers)
                seen[pid] = response.json()["sha256"]
            return len(seen) == 2 and set(seen.values()) == {new}

        wait_until(every_worker_serves_the_new_model, timeout=30, step=0.2)
        assert set(server.processes()) == workers  # swapped in place: no worker restarted
        answers = []
        # At least 20 answers, from both workers (the kernel may hand one worker a run of
        # new connections: ask until each has answered, or give up after 200).
        while len(answers) < 20 or (len({pid for _r, pid in answers}) < 2 and len(answers) < 200):
            answers.append(
                server.request_from_worker("POST", "/v1/predict", json=V1_HOUSE, headers=headers)
            )
    # SIGTERM to the master: each worker flushed its own part of the log at shutdown.
    assert {response.json()["model_sha256"] for response, _pid in answers} == {new}
    assert len({pid for _response, pid in answers}) == 2
    logged = logged_request_ids(engine)
    engine.dispose()
    assert sorted(logged) == sorted(r.headers["X-Request-ID"] for r, _pid in answers)
