"""Fixtures for the identity layer: the store runs on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from auth.passwords import PasswordHasher, VerifyGuard
from auth.store import CredentialStore
from db.engine import make_engine
from migrations import upgrade_schema


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An empty database of each backend; PostgreSQL starts only when a test needs it."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('db') / 'auth.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine at the newest schema, disposed after the test."""
    engine = make_engine(db_url)
    try:
        upgrade_schema(engine)
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def pepper() -> bytes:
    return secrets.token_bytes(32)


@pytest.fixture(scope="session")
def hasher() -> PasswordHasher:
    """The production argon2 parameters; a generous guard so tests never shed load."""
    return PasswordHasher(guard=VerifyGuard(size=8, timeout=30))


@pytest.fixture
def store(engine: Engine, pepper: bytes, hasher: PasswordHasher) -> CredentialStore:
    return CredentialStore(engine, pepper, hasher=hasher)
