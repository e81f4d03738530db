"""Servers for the benchmark: started on free loopback ports, measured, stopped by PID.

Every process here is one this module started: it runs in its own session (so its
process group id is its PID), its output goes to files in the run's directory, and
``stop`` sends SIGTERM to that PID, waits, then SIGKILL to that process group if
anything lingers. Nothing is ever stopped by name.

Our service runs exactly as operators run it, ``housing-api serve --workers N``.
The baselines run with the same server settings: ``uvicorn --factory`` for one
worker (as ``serve`` does in-process), gunicorn with uvicorn workers for more, with
the argv ``cli.main.serve`` uses.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from deploy.processes import HOST, ServerFailed, free_port, stop_group

BIN = Path(sys.executable).parent
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 25.0  # gunicorn's --graceful-timeout is 20 s
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (gunicorn's workers are the master's children)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    with contextlib.suppress(OSError):
        return [int(p) for p in path.read_text().split()]
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM of ``pid`` (its peak resident set) in MiB, or None if it is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time ``pid`` has used so far (0 if it is gone)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return 0.0


@dataclass
class Process:
    """One started process (and, for gunicorn, its workers)."""

    name: str
    argv: Sequence[str]
    root: Path
    env: Mapping[str, str]
    port: int
    workers: int = 1
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        if self.popen is None:
            raise ServerFailed(f"{self.name} is not running")
        return self.popen.pid

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def log(self) -> str:
        parts = []
        for name in ("stdout.log", "stderr.log"):
            path = self.root / name
            if path.exists():
                parts.append(path.read_text(errors="replace")[-4000:])
        return "\n".join(parts)

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with (
            (self.root / "stdout.log").open("ab") as out,
            (self.root / "stderr.log").open("ab") as err,
        ):
            self.popen = subprocess.Popen(
                list(self.argv),
                cwd=self.root,
                env=dict(self.env),
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def worker_pids(self) -> list[int]:
        """The processes that serve requests: the server itself, or gunicorn's workers."""
        return [self.pid] if self.workers == 1 else children(self.pid)

    def all_pids(self) -> list[int]:
        return [self.pid, *children(self.pid)] if self.workers > 1 else [self.pid]

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.all_pids())

    def peak_rss_mb(self) -> list[float]:
        return [mb for pid in self.worker_pids() if (mb := peak_rss_mb(pid)) is not None]

    def wait_ready(self, path: str = "/healthz") -> None:
        """Until ``path`` answers 200 and every worker process exists."""
        deadline = time.monotonic() + START_TIMEOUT_S
        url = self.base_url + path
        while True:
            if self.popen is None or self.popen.poll() is not None:
                raise ServerFailed(f"{self.name} exited at start:\n{self.log}")
            with contextlib.suppress(httpx.HTTPError):
                ok = httpx.get(url, timeout=2.0).status_code == 200
                if ok and len(self.worker_pids()) >= self.workers:
                    return
            if time.monotonic() > deadline:
                raise ServerFailed(f"{self.name} not ready after {START_TIMEOUT_S}s:\n{self.log}")
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM by PID and wait; SIGKILL its process group if anything lingers."""
        if self.popen is not None:
            stop_group(self.popen, STOP_TIMEOUT_S)
        self.popen = None


def ours(name: str, root: Path, env: Mapping[str, str], workers: int) -> Process:
    """``housing-api serve``, exactly as operators run it."""
    port = free_port()
    argv = [
        str(BIN / "housing-api"),
        "serve",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    return Process(name, argv, root, env, port, workers)


def factory(name: str, target: str, root: Path, env: Mapping[str, str], workers: int) -> Process:
    """An app factory ``module:function`` behind the same server settings as ``serve``.

    Mirrors ``cli.main.serve``: uvicorn without its access log (the app logs each
    request itself) and without proxy headers for one worker; gunicorn with uvicorn
    workers, the app's gunicorn hooks and a fresh Prometheus multiprocess directory
    for more. Keep the two in step when ``serve`` changes.
    """
    port = free_port()
    if workers == 1:
        argv = [
            str(BIN / "uvicorn"),
            "--factory",
            target,
            "--host",
            HOST,
            "--port",
            str(port),
            "--no-proxy-headers",
            "--no-server-header",
            "--no-access-log",
        ]
        return Process(name, argv, root, env, port, workers)
    metrics_dir = root / "prometheus"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    argv = [
        str(BIN / "gunicorn"),
        f"{target}()",
        "--worker-class",
        "uvicorn_worker.UvicornWorker",
        "--workers",
        str(workers),
        "--bind",
        f"{HOST}:{port}",
        "--forwarded-allow-ips",
        env.get("FORWARDED_ALLOW_IPS", HOST),
        "--graceful-timeout",
        "20",
        "--timeout",
        "60",
    ]
    app_dir = Path(__file__).resolve().parent.parent / "app"
    if (app_dir / "serving.py").exists():  # as `serve` runs it: draining, no Server header
        argv[argv.index("uvicorn_worker.UvicornWorker")] = "app.serving.DrainingUvicornWorker"
    if (app_dir / "gunicorn_conf.py").exists():
        argv[2:2] = ["--config", "python:app.gunicorn_conf"]
    env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    return Process(name, argv, root, env, port, workers)


def redis_binary() -> Path:
    """The Debian-packaged ``redis-server`` (``make system-deps``), else one on PATH."""
    debian = Path("/usr/bin/redis-server")
    if os.access(debian, os.X_OK):
        return debian
    found = shutil.which("redis-server")
    if found is None:
        raise ServerFailed("redis-server not found: run `make system-deps`")
    return Path(found)


def redis(root: Path) -> Process:
    """A throwaway redis-server on a free loopback port, without persistence."""
    port = free_port()
    argv = [
        str(redis_binary()),
        "--port",
        str(port),
        "--bind",
        HOST,
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(root),
        "--daemonize",
        "no",
    ]
    return Process("redis", argv, root, dict(os.environ), port)


def wait_redis(process: Process) -> None:
    import redis as redis_client

    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.popen is None or process.popen.poll() is not None:
            raise ServerFailed(f"redis-server exited at start:\n{process.log}")
        with (
            contextlib.suppress(redis_client.RedisError),
            redis_client.Redis(host=HOST, port=process.port, socket_timeout=1.0) as conn,
        ):
            if conn.ping():
                return
        if time.monotonic() > deadline:
            raise ServerFailed(f"redis-server not ready:\n{process.log}")
        time.sleep(0.05)
