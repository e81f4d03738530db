"""Engines and sessions for the service's one database (credentials and prediction log).

SQLite (the embedded default) and PostgreSQL (production) behave the same from the
stores' point of view: both enforce foreign keys, and both wait instead of failing
when another process holds a lock. The schema itself is ``migrations``' business.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

SQLITE_BUSY_TIMEOUT_MS = 5000


class UnsupportedDatabaseError(ValueError):
    """DATABASE_URL names a backend or driver we do not run on; a start-up error."""


def make_engine(url: str, **options: Any) -> Engine:
    """An Engine for a SQLite or PostgreSQL URL (``postgresql://`` is run with psycopg 3).

    ``options`` go to ``create_engine`` as they are (e.g. ``json_serializer``).
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
        return create_engine(
            parsed.set(drivername="postgresql+psycopg"), pool_pre_ping=True, **options
        )
    raise UnsupportedDatabaseError(
        f"DATABASE_URL backend {backend!r} is not supported; use sqlite:/// or postgresql+psycopg://"
    )


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
