"""The real ``housing-api serve`` as a subprocess, for tests that need whole processes.

Each server gets its own session (process group), a free loopback port and log files
in a directory of the test's; it is stopped by PID: SIGTERM to the server (the gunicorn
master with ``--workers N``), a wait, then SIGKILL to its process group if anything
lingers. The environment is the caller's minus every setting of the app, so a
developer's shell or ``.env`` never leaks in (the working directory is a temp dir).

Which worker answered is read from the kernel, not from the app: while the client's
connection is still open, ``worker_of(client_port)`` finds the process of the server's
group that holds the accepted socket (``/proc/net/tcp`` and ``/proc/<pid>/fd``). Nothing
is added to the server or its configuration for that.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from app.settings import Settings
from deploy.processes import HOST, ServerFailed, free_port, stop_group

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 25.0  # gunicorn's --graceful-timeout is 20 s
EXECUTABLE = Path(sys.executable).with_name("housing-api")
# What uvicorn, and gunicorn, log first once ``serve`` hands over to them.
SERVING_SIGNS = ("Started server process", "Starting gunicorn")


def app_env(values: Mapping[str, str]) -> dict[str, str]:
    """The current environment without any app setting, plus ``values``."""
    ours = {name.upper() for name in Settings.model_fields}
    ours |= {"GUNICORN_CMD_ARGS", "PROMETHEUS_MULTIPROC_DIR"}
    env = {name: value for name, value in os.environ.items() if name.upper() not in ours}
    env.update(values)
    return env


def run_cli(env: Mapping[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``housing-api ARGS`` with ``env``; fails the caller on a non-zero exit."""
    result = subprocess.run(
        [str(EXECUTABLE), *args],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise ServerFailed(f"housing-api {' '.join(args)} failed:\n{result.stderr}")
    return result


class AppServer:
    """One ``housing-api serve`` process (and its workers)."""

    def __init__(
        self,
        root: Path,
        port: int,
        workers: int,
        process: subprocess.Popen[bytes],
    ) -> None:
        self.root = root
        self.port = port
        self.workers = workers
        self.process = process

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def stdout(self) -> str:
        return _read(self.root / "stdout.log")

    @property
    def stderr(self) -> str:
        return _read(self.root / "stderr.log")

    def processes(self) -> list[int]:
        """PIDs of the server's process group: the server, and its workers if any."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # gone meanwhile
                continue
            # Fields after the ``(comm)``: state, ppid, pgrp, ...
            pgrp = int(stat.rsplit(")", 1)[1].split()[2])
            if pgrp == self.process.pid:
                pids.append(int(entry.name))
        return pids

    def worker_of(self, client_port: int) -> int:
        """The PID holding the server end of our still-open connection from ``client_port``."""
        inode = _accepted_socket_inode(self.port, client_port)
        target = f"socket:[{inode}]"
        for pid in self.processes():
            with contextlib.suppress(OSError):
                for fd in Path(f"/proc/{pid}/fd").iterdir():
                    with contextlib.suppress(OSError):
                        if os.readlink(fd) == target:
                            return pid
        raise LookupError(f"no process of {self.base_url} holds {target}")

    def get_from_worker(self, path: str, **kwargs: Any) -> tuple[httpx.Response, int]:
        """GET on a new connection; ``(response, PID of the worker that answered)``."""
        return self.request_from_worker("GET", path, **kwargs)

    def request_from_worker(
        self, method: str, path: str, **kwargs: Any
    ) -> tuple[httpx.Response, int]:
        """One request on a new connection, kept open until we know which worker took it."""
        with httpx.Client(base_url=self.base_url, timeout=15.0) as client:
            response = client.request(method, path, **kwargs)
            stream = response.extensions["network_stream"]
            _host, client_port = stream.get_extra_info("client_addr")
            return response, self.worker_of(client_port)

    def wait_ready(self) -> bool:
        """Healthy, every worker of it; False if the port was taken (try another)."""
        try:
            self.wait_healthy()
            if self.workers > 1:
                self.wait_all_workers()
        except ServerFailed:
            self.stop()
            if "already in use" in self.stderr or "Connection in use" in self.stderr:
                return False
            raise
        return True

    def wait_serving(self) -> None:
        """Until the CLI's checks are done and uvicorn or gunicorn has started (or it died,
        or it already answers)."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while self.process.poll() is None and time.monotonic() < deadline:
            if any(sign in self.stderr for sign in SERVING_SIGNS) or self._healthy():
                return
            time.sleep(0.05)

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.base_url}/healthz", timeout=2.0).status_code == 200
        except httpx.TransportError:
            return False

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                raise ServerFailed(f"serve exited ({self.process.returncode}):\n{self.stderr}")
            if self._healthy():
                return
            if time.monotonic() > deadline:
                raise ServerFailed(f"/healthz not 200 after {START_TIMEOUT_S}s:\n{self.stderr}")
            time.sleep(0.1)

    def wait_all_workers(self) -> None:
        """Until every worker has answered /healthz (they boot at their own pace)."""
        deadline = time.monotonic() + START_TIMEOUT_S
        seen: set[int] = set()
        while len(seen) < self.workers:
            if self.process.poll() is not None:
                raise ServerFailed(f"serve exited ({self.process.returncode}):\n{self.stderr}")
            if time.monotonic() > deadline:
                raise ServerFailed(f"only workers {seen} answered of {self.workers}")
            with contextlib.suppress(httpx.TransportError, LookupError):
                seen.add(self.get_from_worker("/healthz")[1])
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM the server by PID, wait; SIGKILL its process group if anything lingers."""
        stop_group(self.process, STOP_TIMEOUT_S)


def _accepted_socket_inode(server_port: int, client_port: int) -> str:
    """The inode of the server-side TCP socket of a loopback connection (IPv4)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].rsplit(":", 1)[1], 16)
        remote_port = int(fields[2].rsplit(":", 1)[1], 16)
        if local_port == server_port and remote_port == client_port:
            return fields[9]
    raise LookupError(f"no connection {client_port} -> {server_port} in /proc/net/tcp")


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def spawn_app(root: Path, env: Mapping[str, str], *, workers: int = 1) -> AppServer:
    """Start ``serve`` on a free port without waiting for it; logs under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [str(EXECUTABLE), "serve", "--host", HOST, "--port", str(port)]
    if workers > 1:
        command += ["--workers", str(workers)]
    with (root / "stdout.log").open("wb") as out, (root / "stderr.log").open("wb") as err:
        process = subprocess.Popen(
            command, cwd=root, env=dict(env), stdout=out, stderr=err, start_new_session=True
        )
    return AppServer(root, port, workers, process)


@contextlib.contextmanager
def running_apps(
    roots: Sequence[Path], env: Mapping[str, str], *, workers: int = 1
) -> Iterator[list[AppServer]]:
    """One ``serve`` per root, started together, each healthy on its own free port (every
    one of its workers); all stopped on exit."""
    spawned: list[AppServer] = []
    try:
        servers = []
        for root in roots:
            if spawned:
                # The first development start creates a demo client: let one process do
                # that (and publish the dev secrets) before the next one looks.
                spawned[-1].wait_serving()
            spawned.append(spawn_app(root, env, workers=workers))
        for index, root in enumerate(roots):
            server = spawned[index]
            for _attempt in range(3):  # another process may take the port after the probe
                if server.wait_ready():
                    break
                server = spawn_app(root, env, workers=workers)
                spawned.append(server)
            else:
                raise ServerFailed(f"serve could not bind a port:\n{server.stderr}")
            servers.append(server)
        yield servers
    finally:
        for server in spawned:
            server.stop()


@contextlib.contextmanager
def running_app(root: Path, env: Mapping[str, str], *, workers: int = 1) -> Iterator[AppServer]:
    """``housing-api serve`` healthy on a free port, logs under ``root``; stopped on exit."""
    with running_apps([root], env, workers=workers) as [server]:
        yield server


def log_events(stderr: str) -> list[dict[str, Any]]:
    """The JSON log events of a server's stderr (other lines skipped)."""
    events = []
    for line in stderr.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events
