"""``make stack`` / ``make stack-down`` as a user runs them: ``python -m deploy.stack``.

Unlike the other e2e tests (which reuse the session's Redis), this starts the whole
stack from the command line, its own redis-server included, and then stops it.
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from deploy.processes import Proc, free_port, group_members
from tests.e2e.support import HOUSE_V1
from tests.support.app_server import app_env

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def stack_command(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deploy.stack", *args],
        cwd=cwd,
        env={**app_env({}), "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _uid(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^Uid:\s+(\d+)", status, re.MULTILINE)
    assert match is not None
    return int(match[1])


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_stack_up_prints_how_to_call_it_and_down_stops_exactly_its_processes(
    tmp_path: Path, trained_model_dir: Path
) -> None:
    root = tmp_path / "var" / "stack"
    https_port, http_port = free_port(), free_port()
    up = stack_command(
        "up",
        "--root",
        str(root),
        "--https-port",
        str(https_port),
        "--http-port",
        str(http_port),
        "--model-dir",
        str(trained_model_dir),
        cwd=tmp_path,
    )
    state = json.loads((root / "stack.json").read_text()) if (root / "stack.json").exists() else {}
    try:
        assert up.returncode == 0, up.stderr
        pids = {p["name"]: p["pid"] for p in state["processes"]}
        assert set(pids) == {"redis", "replica-1", "replica-2", "nginx"}
        for name, pid in pids.items():
            assert (root / "pids" / f"{name}.pid").read_text().strip() == str(pid)
        assert (root / "ca.pem").is_file()
        assert oct((root / "secrets.env").stat().st_mode & 0o777) == "0o600"
        if os.geteuid() == 0:  # Nginx itself runs unprivileged, not just its workers
            assert _uid(pids["nginx"]) != 0

        # The printed instructions work as printed: the API key line, over TLS.
        assert f"https://localhost:{https_port}" in up.stdout
        api_key = re.search(r"api_key\s+(hpa_\S+)", up.stdout)
        assert api_key is not None, up.stdout
        tls = ssl.create_default_context(cafile=str(root / "ca.pem"))
        answer = httpx.post(
            f"https://localhost:{https_port}/v1/predict",
            json=HOUSE_V1,
            headers={"X-API-Key": api_key[1]},
            verify=tls,
            timeout=30.0,
        )
        assert answer.status_code == 200, answer.text

        again = stack_command("up", "--root", str(root), cwd=tmp_path)
        assert again.returncode == 1
        assert "already running" in again.stderr
    finally:
        down = stack_command("down", "--root", str(root), cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    for data in state["processes"]:
        assert not Proc.from_json(data).alive(), f"{data['name']} ({data['pid']}) still runs"
        assert group_members(data["pid"]) == [], f"workers of {data['name']} still run"
        assert not (root / "pids" / f"{data['name']}.pid").exists()
    assert _port_free(https_port)
    assert _port_free(http_port)
    assert not Path(state["nginx_runtime"]).exists()
    assert stack_command("down", "--root", str(root), cwd=tmp_path).returncode == 0
