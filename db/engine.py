"""Engines and sessions for the service's one database (credentials and prediction log).

SQLite (the embedded default) and PostgreSQL (production) behave the same from the
stores' point of view: both enforce foreign keys, and both wait instead of failing
when another process holds a lock. The schema itself is ``migrations``' business.

``Timeouts`` bound every wait for PostgreSQL, for engines that serve requests (the
credential store): connecting, a statement or a lock on the server, a pooled
connection, and (client-side) each round trip, since a server that is hung rather than
down (SIGSTOP, a frozen VM) accepts connections and bytes in its kernel but never
answers, so only the client can give up. Without them, a read waits for as long as the
server is hung.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.abc import PQGen
from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

SQLITE_BUSY_TIMEOUT_MS = 5000
RV = TypeVar("RV")


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long a PostgreSQL engine waits, at most, for each thing it waits for."""

    connect_seconds: int = 2  # a new connection, handshake included (psycopg's minimum: 2)
    statement_ms: int = 800  # server-side statement_timeout
    lock_ms: int = 500  # server-side lock_timeout
    round_trip_seconds: float = 1.0  # client-side: one exchange with the server
    pool_seconds: float = 2.0  # a free connection of the pool


class UnsupportedDatabaseError(ValueError):
    """DATABASE_URL names a backend or driver we do not run on; a start-up error."""


class BoundedConnection(psycopg.Connection[Any]):
    """A psycopg connection that stops waiting for the server after ``round_trip_seconds``.

    Every blocking exchange of a psycopg connection (a statement and its rows, commit,
    rollback, SQLAlchemy's pre-ping) goes through ``wait``; past the deadline the
    connection is closed, as its state is unknown, and ``OperationalError`` is raised:
    SQLAlchemy sees a closed connection, treats it as a disconnect and drops it.
    """

    round_trip_seconds: float | None = None

    def wait(self, gen: PQGen[RV], interval: float = 0.1, timeout: float | None = None) -> RV:
        bound = self.round_trip_seconds if timeout is None else timeout
        try:
            return super().wait(gen, interval, bound)
        except pg_errors._WaitTimeout:
            self.close()
            raise psycopg.OperationalError(
                f"no answer from the database within {bound}s; connection closed"
            ) from None


def make_engine(url: str, *, timeouts: Timeouts | None = None, **options: Any) -> Engine:
    """An Engine for a SQLite or PostgreSQL URL (``postgresql://`` is run with psycopg 3).

    ``timeouts`` bound PostgreSQL's waits (SQLite has its busy timeout); ``options`` go
    to ``create_engine`` as they are (e.g. ``json_serializer``).
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed, options)
    if backend in ("postgresql", "postgres"):
        if parsed.drivername not in ("postgresql", "postgres", "postgresql+psycopg"):
            raise UnsupportedDatabaseError(
                f"DATABASE_URL driver {parsed.drivername!r} is not supported; "
                "use postgresql+psycopg://"
            )
        parsed = parsed.set(drivername="postgresql+psycopg")
        if timeouts is None:
            return create_engine(parsed, pool_pre_ping=True, **options)
        return _bounded_postgres_engine(parsed, timeouts, options)
    raise UnsupportedDatabaseError(
        f"DATABASE_URL backend {backend!r} is not supported; use sqlite:/// or postgresql+psycopg://"
    )


def _bounded_postgres_engine(url: URL, timeouts: Timeouts, options: dict[str, Any]) -> Engine:
    server_side = f"-c statement_timeout={timeouts.statement_ms} -c lock_timeout={timeouts.lock_ms}"
    engine = create_engine(
        url,
        pool_pre_ping=True,
        pool_timeout=timeouts.pool_seconds,
        connect_args={"connect_timeout": timeouts.connect_seconds, "options": server_side},
        **options,
    )

    @event.listens_for(engine, "do_connect")
    def _connect(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> BoundedConnection:
        connection = BoundedConnection.connect(*cargs, **cparams)
        connection.round_trip_seconds = timeouts.round_trip_seconds
        return connection

    return engine


def _sqlite_engine(url: URL, options: dict[str, Any]) -> Engine:
    database = url.database or ""
    in_memory = database in ("", ":memory:") or "mode=memory" in str(url.query)
    kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
    if in_memory:
        kwargs["poolclass"] = StaticPool  # one connection, or each would see an empty DB
    elif not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, **kwargs, **options)
    event.listen(engine, "connect", _set_sqlite_pragmas)
    return engine


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # busy_timeout first: it makes a writer wait for the lock instead of failing at once,
    # and switching to WAL itself needs a lock. WAL lets readers run while one process
    # writes. SQLite ignores foreign keys unless asked.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        _enable_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _enable_wal(cursor: Any) -> None:
    """``journal_mode=WAL`` can answer "database is locked" without calling the busy
    handler while another connection converts or recovers the file: retry it ourselves."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit (we copy them into records)."""
    return sessionmaker(bind=engine, expire_on_commit=False)
