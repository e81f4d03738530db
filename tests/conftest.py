"""Shared fixtures. Each block below belongs to one area; add yours in its own block."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.postgres import (
    PostgresServer,
    PostgresUnavailable,
    find_binaries,
    running_postgres,
)
from tests.support.redis import RedisServer, RedisUnavailable, running_redis
from tests.support.redis import find_binary as find_redis_binary

# Fails the run if any log record of the session carries a secret.
pytest_plugins = ["tests.support.log_hygiene"]

# --- PostgreSQL: one real server per test session, a fresh database per test ---------
# Used by tests marked @pytest.mark.postgres (the credential store's, among others).


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL cluster on 127.0.0.1; missing binaries fail the run, never skip."""
    try:
        find_binaries()
    except PostgresUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    with running_postgres() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of an empty database of its own, dropped after the test."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    url = postgres_server.create_database(name)
    yield url
    postgres_server.drop_database(name)


# --- end of the PostgreSQL block ------------------------------------------------------


# --- Models: v1 and v2 trained once per session -----------------------------------------
# Reused by the ml, app and CLI tests. Treat the directory as read-only: copy it
# (shutil.copytree) before tampering with an artifact.

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_PATH = REPO_ROOT / "data" / "housing.csv"


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory with ``v1/`` and ``v2/`` as ``housing-api train`` writes them."""
    from ml.training import train_all  # imported here: scikit-learn is slow to import

    model_dir = tmp_path_factory.mktemp("models")
    train_all(DATA_PATH, model_dir)
    return model_dir


# --- end of the models block -------------------------------------------------------------


# --- Redis: one real server per test session, a clean database per test -----------------
# Used by the shared rate-limit tests (tests/limits/test_shared_limits.py). A test may
# ``redis_server.stop()`` and ``redis_server.start()`` it (same port) to play an outage.


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server on 127.0.0.1; a missing binary fails the run, never skips."""
    try:
        find_redis_binary()
    except RedisUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    with running_redis() as server:
        yield server


_redis_databases = itertools.count()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """``redis://`` URL of a logical database of its own (0-15 in turn), flushed before
    and after the test; the server is brought back first if the test left it stopped."""
    db = next(_redis_databases) % 16
    with redis_server.client(db) as conn:
        conn.flushdb()
    yield redis_server.url(db)
    redis_server.start()
    with redis_server.client(db) as conn:
        conn.flushdb()


# --- end of the Redis block ----------------------------------------------------------------
