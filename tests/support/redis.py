"""A throwaway Redis server for the tests: a real one, never a mock.

``redis-server`` from the Debian package (``make system-deps``) runs in the foreground
on 127.0.0.1 and a free port, configured entirely on its command line (no persistence,
its working directory a temp dir). ``stop()`` and ``start()`` let a test take it down
in the middle of a run and bring it back on the same port, as an outage would;
``pause()`` and ``resume()`` hang it (SIGSTOP/SIGCONT: connections open, no answers).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from deploy.processes import free_port

MISSING_MESSAGE = (
    "redis-server not found at /usr/bin/redis-server or on PATH "
    "(the shared rate-limit tests run against a real server): run `make system-deps`"
)
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
HOST = "127.0.0.1"


class RedisUnavailable(RuntimeError):
    pass


def find_binary() -> Path:
    """The Debian-packaged ``redis-server``, else one on ``PATH``."""
    debian = Path("/usr/bin/redis-server")
    if os.access(debian, os.X_OK):
        return debian
    found = shutil.which("redis-server")
    if found is None:
        raise RedisUnavailable(MISSING_MESSAGE)
    return Path(found)


class RedisServer:
    """One ``redis-server`` process; ``url(db)`` gives ``redis://`` URLs into it."""

    def __init__(
        self, binary: Path, root: Path, port: int, extra_args: list[str] | None = None
    ) -> None:
        self.binary = binary
        self.root = root
        self.port = port
        self.extra_args = extra_args or []  # e.g. cluster mode (tests/support/redis_cluster.py)
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://{HOST}:{self.port}/{db}"

    def client(self, db: int = 0) -> redis.Redis:
        """A client that fails at once (no retries) when the server is down."""
        return redis.Redis(
            host=HOST,
            port=self.port,
            db=db,
            socket_timeout=1.0,
            socket_connect_timeout=1.0,
            retry=Retry(NoBackoff(), 0),
        )

    @contextlib.contextmanager
    def monitor(self) -> Iterator[Callable[[], list[str]]]:
        """What clients send while the block runs (Redis MONITOR, in a thread), without
        the commands their scripts run.

        Yields a function that ends the watch and returns the commands as text, in order.
        """
        seen: list[str] = []
        started, sentinel = threading.Event(), "monitor-end-" + os.urandom(4).hex()

        def watch() -> None:
            with self.client() as conn, conn.monitor() as monitor:  # type: ignore[no-untyped-call]
                started.set()
                for command in monitor.listen():
                    text = str(command.get("command", ""))
                    if sentinel in text:
                        return
                    if command.get("client_type") != "lua":  # not what a script ran
                        seen.append(text)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        started.wait(10)
        time.sleep(0.2)  # MONITOR is registered once the thread listens

        def stop() -> list[str]:
            if watcher.is_alive():
                with self.client() as conn:
                    conn.echo(sentinel)
                watcher.join(10)
            return list(seen)

        try:
            yield stop
        finally:
            stop()

    @property
    def log_path(self) -> Path:
        return self.root / "redis.log"

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ping(self) -> bool:
        try:
            with self.client() as conn:
                return bool(conn.ping())
        except redis.RedisError:
            return False

    def start(self) -> None:
        """Start the server on ``self.port`` (again, after ``stop()``); wait for PING."""
        if self.running:
            return
        command = [
            str(self.binary),
            "--port",
            str(self.port),
            "--bind",
            HOST,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.root),
            "--daemonize",
            "no",
            *self.extra_args,
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.ping():
            if self.process.poll() is not None:
                raise RedisUnavailable(f"redis-server exited at start:\n{self.log}")
            if time.monotonic() > deadline:
                self.stop()
                raise RedisUnavailable(f"redis-server not ready after {START_TIMEOUT_S}s")
            time.sleep(0.05)

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets (the kernel still accepts) and answers
        nothing, as a hung process or a frozen VM."""
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        """SIGTERM by PID, wait, SIGKILL if it lingers. The port is free afterwards."""
        process = self.process
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGCONT)  # a paused server cannot handle SIGTERM
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=STOP_TIMEOUT_S)
        self.process = None


@contextlib.contextmanager
def running_redis() -> Iterator[RedisServer]:
    """Start a fresh server on a free port; stop it and delete its files on exit."""
    binary = find_binary()
    root = Path(tempfile.mkdtemp(prefix="housing-redis-"))
    try:
        for _attempt in range(3):  # another process may take the port between probe and bind
            server = RedisServer(binary, root, free_port())
            try:
                server.start()
            except RedisUnavailable:
                if "Address already in use" in server.log:
                    continue
                raise
            break
        else:
            raise RedisUnavailable(f"redis-server could not bind a port:\n{server.log}")
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
