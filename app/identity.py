"""Build the identity parts (store, signing keys, verifier) from settings.

Shared by the app factory and the CLI, so both open the same database the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from app.settings import Settings
from auth.jwt_keys import SigningKeys, load_signing_keys
from auth.secrets import load_or_create_pepper
from auth.store import CredentialStore
from db.engine import make_engine
from migrations import upgrade_schema


def signing_keys(settings: Settings) -> SigningKeys:
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


def pepper(settings: Settings) -> bytes:
    configured = settings.api_key_pepper.get_secret_value() if settings.api_key_pepper else None
    return load_or_create_pepper(settings.var_dir, configured, settings.is_production)


@contextmanager
def open_store(settings: Settings) -> Iterator[CredentialStore]:
    """The credential store, its schema created or migrated first; disposed on exit."""
    engine = make_engine(settings.database_url)
    try:
        upgrade_schema(engine)
        yield CredentialStore(engine, pepper(settings))
    finally:
        engine.dispose()
