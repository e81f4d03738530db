"""A throwaway PostgreSQL server for the tests: a real one, never a mock.

``initdb`` and ``postgres`` from the Debian package (``make system-deps``) run in a
temp directory on 127.0.0.1 and a free port, as the ``postgres`` user when we are root
(PostgreSQL refuses to run as root). Trust authentication is fine: the cluster only
listens on loopback and lives as long as the test session.

The fault suite plays outages on a server of its own: ``stop()`` (a fast shutdown) and
``start()`` again on the same port and data, ``pause()`` and ``resume()`` (SIGSTOP and
SIGCONT to the postmaster and every backend: connections stay open, nothing answers).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg

from deploy.processes import free_port

MISSING_MESSAGE = (
    "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin "
    "(the store's tests run against a real server): run `make system-deps`"
)
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0


class PostgresUnavailable(RuntimeError):
    pass


def find_binaries() -> tuple[Path, Path]:
    """``(initdb, postgres)`` of the newest Debian-packaged major version.

    Debian keeps them under ``/usr/lib/postgresql/<major>/bin``; ``/usr/local/bin`` may
    hold other builds (or wrappers), so we do not rely on ``PATH``.
    """
    candidates = []
    for bindir in Path("/usr/lib/postgresql").glob("*/bin"):
        initdb, postgres = bindir / "initdb", bindir / "postgres"
        if os.access(initdb, os.X_OK) and os.access(postgres, os.X_OK):
            major = bindir.parent.name
            candidates.append((int(major) if major.isdigit() else 0, initdb, postgres))
    if not candidates:
        raise PostgresUnavailable(MISSING_MESSAGE)
    _, initdb, postgres = max(candidates)
    return initdb, postgres


class PostgresServer:
    """One running cluster; ``url(dbname)`` gives SQLAlchemy URLs into it."""

    def __init__(
        self,
        root: Path,
        port: int,
        process: subprocess.Popen[bytes],
        command: list[str] | None = None,
    ) -> None:
        self.root = root
        self.port = port
        self.process = process
        self.command = command or []
        self._paused: list[int] = []

    def processes(self) -> list[int]:
        """The postmaster and every process it forked (backends, background workers)."""
        postmaster = _postmaster_pid(self.root / "data")
        if postmaster is None:
            return []
        found = [postmaster]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                    found.append(int(stat.parent.name))
        return found

    def pause(self) -> None:
        """SIGSTOP every process of the server: it keeps its sockets and answers nothing."""
        self._paused = self.processes()
        for pid in self._paused:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        # runuser (our child when we are root) stops itself when its child stops, as su
        # does for job control, and is not woken by the child's SIGCONT: wake it too.
        for pid in [*self._paused, self.process.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self._paused = []

    def stop(self) -> None:
        """A fast shutdown, as ``pg_ctl stop -m fast``: connections are closed."""
        self.resume()
        _stop(self)

    def start(self) -> None:
        """Start again, on the same port and data directory, after ``stop()``."""
        if self.process.poll() is None:
            return
        with (self.root / "postgres.log").open("ab") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)
        _wait_ready(self)

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user="postgres",
            dbname=dbname,
            autocommit=True,
            connect_timeout=2,
        )

    def create_database(self, dbname: str) -> str:
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{dbname}"')
        return self.url(dbname)

    def drop_database(self, dbname: str) -> None:
        with self.connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')

    @property
    def log(self) -> str:
        path = self.root / "postgres.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _as_postgres_user() -> tuple[list[str], pwd.struct_passwd | None]:
    if os.geteuid() != 0:
        return [], None
    try:
        account = pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresUnavailable(
            "running as root but there is no `postgres` user: " + MISSING_MESSAGE
        ) from None
    return ["runuser", "-u", "postgres", "--"], account


def _wait_ready(server: PostgresServer) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if server.process.poll() is not None:
            raise PostgresUnavailable(f"postgres exited at start:\n{server.log}")
        try:
            with server.connect() as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise PostgresUnavailable(
                    f"postgres not ready after {START_TIMEOUT_S}s:\n{server.log}"
                ) from None
            time.sleep(0.1)


def _postmaster_pid(data: Path) -> int | None:
    try:
        first_line = (data / "postmaster.pid").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    return int(first_line) if first_line.strip().isdigit() else None


def _stop(server: PostgresServer) -> None:
    """Fast shutdown (SIGINT) of the postmaster by its PID, then wait for it."""
    pid = _postmaster_pid(server.root / "data")
    process = server.process
    if process.poll() is None:
        # Under runuser the Popen child is runuser itself: signal the postmaster.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid if pid is not None else process.pid, signal.SIGINT)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid if pid is not None else process.pid, signal.SIGQUIT)
            process.wait(timeout=STOP_TIMEOUT_S)


def _initdb(prefix: list[str], initdb: Path, data: Path) -> None:
    command = [*prefix, str(initdb), "--pgdata", str(data), "--username", "postgres"]
    command += ["--auth", "trust", "--encoding", "UTF8", "--no-locale", "--no-sync"]
    result = subprocess.run(command, capture_output=True, check=False)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).decode(errors="replace")
        raise PostgresUnavailable(f"initdb failed:\n{output}")


def _start(prefix: list[str], postgres: Path, root: Path) -> PostgresServer:
    settings = {
        "listen_addresses": "127.0.0.1",
        "unix_socket_directories": str(root),
        "fsync": "off",  # a throwaway cluster: durability buys nothing
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "max_connections": "200",
    }
    options = [arg for name, value in settings.items() for arg in ("-c", f"{name}={value}")]
    for _attempt in range(3):  # another process may take the port between probe and bind
        port = free_port()
        command = [*prefix, str(postgres), "-D", str(root / "data"), "-p", str(port), *options]
        with (root / "postgres.log").open("wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        server = PostgresServer(root, port, process, command)
        try:
            _wait_ready(server)
        except PostgresUnavailable:
            _stop(server)
            if "could not bind" in server.log:
                continue
            raise
        return server
    raise PostgresUnavailable(f"postgres could not bind a port:\n{root / 'postgres.log'}")


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """Start a fresh cluster; stop it and delete its files on exit."""
    initdb, postgres = find_binaries()
    prefix, account = _as_postgres_user()
    root = Path(tempfile.mkdtemp(prefix="housing-pg-"))
    try:
        if account is not None:
            os.chown(root, account.pw_uid, account.pw_gid)
        _initdb(prefix, initdb, root / "data")
        server = _start(prefix, postgres, root)
        try:
            yield server
        finally:
            server.resume()
            _stop(server)
    finally:
        shutil.rmtree(root, ignore_errors=True)
