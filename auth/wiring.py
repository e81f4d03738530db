"""Build the identity parts (store, signing keys, pepper) from settings.

Shared by the app factory and the CLI, so both open the same database the same way.
It lives in auth, not app, so the CLI needs nothing from app but its settings; and it
reads settings through ``IdentitySettings``, so auth never imports app.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from sqlalchemy import Engine

from auth.jwt_keys import SigningKeys, load_signing_keys
from auth.secrets import load_or_create_pepper
from auth.store import CredentialStore
from db.engine import Timeouts, make_engine


class Secret(Protocol):
    """A configured secret that does not print itself (pydantic's ``SecretStr``)."""

    def get_secret_value(self) -> str: ...


class IdentitySettings(Protocol):
    """What this module reads; ``app.settings.Settings`` has it all.

    Read-only properties, so a settings class may declare narrower types (a ``Literal``
    algorithm, ``SecretStr``) and still match.
    """

    @property
    def jwt_algorithm(self) -> str: ...
    @property
    def jwt_secret_key(self) -> Secret | None: ...
    @property
    def jwt_private_key_file(self) -> Path | None: ...
    @property
    def jwt_previous_public_key_file(self) -> Path | None: ...
    @property
    def api_key_pepper(self) -> Secret | None: ...
    @property
    def database_url(self) -> str: ...
    @property
    def var_dir(self) -> Path: ...
    @property
    def is_production(self) -> bool: ...


def signing_keys(settings: IdentitySettings) -> SigningKeys:
    """Raises ``ConfigError`` for a missing or weak key in production."""
    secret = settings.jwt_secret_key.get_secret_value() if settings.jwt_secret_key else None
    return load_signing_keys(
        algorithm=settings.jwt_algorithm,
        secret_key=secret,
        private_key_file=settings.jwt_private_key_file,
        previous_public_key_file=settings.jwt_previous_public_key_file,
        var_dir=settings.var_dir,
        production=settings.is_production,
    )


def pepper(settings: IdentitySettings) -> bytes:
    configured = settings.api_key_pepper.get_secret_value() if settings.api_key_pepper else None
    return load_or_create_pepper(settings.var_dir, configured, settings.is_production)


@contextmanager
def open_store(
    settings: IdentitySettings, prepare: Callable[[Engine], None]
) -> Iterator[CredentialStore]:
    """The credential store, disposed on exit. ``prepare`` brings the schema where the
    code needs it first (``migrations`` owns that, above auth, so it is handed in).

    The store's engine bounds every wait for PostgreSQL (``db.engine.Timeouts``), so an
    unreachable or hung database is a quick ``StoreUnavailable``; the migrations, which
    may wait on locks and run long, get an unbounded engine of their own."""
    engine = make_engine(settings.database_url, timeouts=Timeouts())
    try:
        if engine.dialect.name == "sqlite":  # one connection may hold the whole database
            prepare(engine)
        else:
            schema_engine = make_engine(settings.database_url)
            try:
                prepare(schema_engine)
            finally:
                schema_engine.dispose()
        yield CredentialStore(engine, pepper(settings))
    finally:
        engine.dispose()
