"""Revocation across processes: the real server with two workers, over real TCP."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from app.settings import Settings
from cli.main import app as cli_app
from deploy.processes import free_port
from tests.auth_http.support import REVOCATION_DEADLINE_SECONDS, bearer, cli_json
from tests.support.houses import V1_HOUSE

STARTUP_TIMEOUT_SECONDS = 90.0  # generous: a loaded CI box imports scikit-learn slowly
STOP_TIMEOUT_SECONDS = 10.0


def server_environment(tmp_path: Path, model_dir: Path) -> dict[str, str]:
    """The caller's environment minus every setting, plus this test's own."""
    settings = {name.upper() for name in Settings.model_fields}
    env = {name: value for name, value in os.environ.items() if name.upper() not in settings}
    env.pop("XDG_RUNTIME_DIR", None)
    env |= {
        "APP_ENV": "development",
        "VAR_DIR": str(tmp_path / "var"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'workers.db'}",
        "MODEL_DIR": str(model_dir),
        "HOME": str(tmp_path),  # gunicorn's control socket goes under $HOME/.gunicorn
        # Limits are not under test; every worker keeps its own in-memory counters.
        "RATE_LIMIT_TOKEN": "1000/minute",
        "RATE_LIMIT_PREDICT": "1000/minute",
        "RATE_LIMIT_AUTH_FAILURES": "1000/minute",
    }
    return env


def log_tail(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:] if log.exists() else "(no log)"


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server we started, then SIGKILL to its own process group if needed."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the group this test created, by its id
        process.wait(timeout=STOP_TIMEOUT_SECONDS)


@contextlib.contextmanager
def running_server(env: dict[str, str], cwd: Path, port: int) -> Iterator[str]:
    """``housing-api serve --workers 2`` on 127.0.0.1:port until /healthz answers."""
    executable = Path(sys.executable).with_name("housing-api")
    log = cwd / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(executable), "serve", "--workers", "2", "--port", str(port)],
            cwd=cwd,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so cleanup reaches the workers
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while True:
            assert process.poll() is None, f"server exited early:\n{log_tail(log)}"
            assert time.monotonic() < deadline, f"no /healthz in time:\n{log_tail(log)}"
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base_url}/healthz", timeout=1.0).status_code == 200:
                    break
            time.sleep(0.2)
        yield base_url
    finally:
        stop(process)


@pytest.mark.slow
def test_revoked_token_is_refused_by_every_worker_within_5_seconds(
    tmp_path: Path, trained_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = server_environment(tmp_path, trained_model_dir)
    for name in ("VAR_DIR", "DATABASE_URL", "MODEL_DIR"):
        monkeypatch.setenv(name, env[name])
    # The client exists (and the schema with it) before the workers start.
    created = cli_json(
        CliRunner().invoke(
            cli_app, ["clients", "create", "workers", "--scopes", "predict", "--json"]
        )
    )
    credentials = (created["client_id"], created["client_secret"])

    with running_server(env, tmp_path, free_port()) as base_url:
        # No keep-alive: every request opens a new connection, so both workers answer some.
        fresh = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=base_url, limits=fresh, timeout=10.0) as http:
            issued = http.post(
                "/token", data={"grant_type": "client_credentials"}, auth=credentials
            )
            assert issued.status_code == 200, issued.text
            token = issued.json()["access_token"]
            headers = bearer(token)
            for _ in range(10):  # accepted everywhere, and now cached as valid everywhere
                response = http.post("/v1/predict", json=V1_HOUSE, headers=headers)
                assert response.status_code == 200, response.text

            revoked = http.post("/revoke", data={"token": token}, auth=credentials)
            assert revoked.status_code == 200, revoked.text
            revoked_at = time.monotonic()

            # Within the deadline each answer is still 200 or already 401...
            while (elapsed := time.monotonic() - revoked_at) < REVOCATION_DEADLINE_SECONDS:
                status = http.post("/v1/predict", json=V1_HOUSE, headers=headers).status_code
                assert status in {200, 401}, (elapsed, status)
                time.sleep(0.25)
            # ...and after it, every worker refuses the token.
            statuses = [
                http.post("/v1/predict", json=V1_HOUSE, headers=headers).status_code
                for _ in range(20)
            ]
            assert statuses == [401] * 20, statuses

    log = (tmp_path / "server.log").read_text(errors="replace")
    assert log.count("Booting worker") == 2, log[-4000:]
