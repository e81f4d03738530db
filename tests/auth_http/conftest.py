"""A freshly built app per test, its real store, and the real CLI on the same database.

Nothing here mocks the JWT library, the store or the verifier: tests talk HTTP with
real ``Authorization`` and ``X-API-Key`` headers, and create credentials with the app's
own ``CredentialStore`` or with ``housing-api`` itself.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from typer.testing import CliRunner, Result

from app.main import create_app
from app.settings import Settings
from auth.jwt_keys import generate_private_key_pem
from auth.store import CredentialStore
from cli.main import app as cli_app
from tests.auth_http.support import Cli, NewClient

ALGORITHMS = ["HS256", "ES256"]
CLIENT_ADDRESS = ("203.0.113.7", 40000)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting leaks in from the caller's environment or a stray ``.env``."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def write_private_key(path: Path) -> Path:
    """An ES256 private key file with mode 0600, as production demands."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(generate_private_key_pem("ES256"))
    return path


@pytest.fixture
def make_settings(tmp_path: Path, trained_model_dir: Path) -> Callable[..., Settings]:
    """Settings isolated in tmp_path; ``algorithm`` picks HS256 or ES256 (a fresh key)."""

    def make(algorithm: str = "HS256", **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "app_env": "development",
            "var_dir": tmp_path / "var",
            "database_url": f"sqlite:///{tmp_path / 'identity.db'}",
            "model_dir": trained_model_dir,
            "redis_url": None,
            # Limits are not under test here; generous so no test is throttled.
            "rate_limit_token": "1000/minute",
            "rate_limit_predict": "1000/minute",
            "rate_limit_auth_failures": "1000/minute",
        }
        if algorithm == "ES256":
            key_file = tmp_path / "es256.pem"
            if not key_file.exists():
                write_private_key(key_file)
            values |= {"jwt_algorithm": "ES256", "jwt_private_key_file": key_file}
        else:
            values["jwt_algorithm"] = algorithm
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return make


@pytest.fixture(params=ALGORITHMS)
def algorithm(request: pytest.FixtureRequest) -> str:
    """Token tests run once per signing algorithm; a module may override this fixture."""
    value: str = request.param
    return value


@pytest.fixture
def settings(make_settings: Callable[..., Settings], algorithm: str) -> Settings:
    return make_settings(algorithm)


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


async def open_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on ``app`` with its lifespan entered (models, store, verifier)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=CLIENT_ADDRESS)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async for c in open_client(app):
        yield c


@pytest.fixture
def store(app: FastAPI, client: httpx.AsyncClient) -> CredentialStore:
    """The running app's own credential store (its lifespan is open)."""
    store: CredentialStore = app.state.services.store
    return store


@pytest.fixture
def new_client(store: CredentialStore) -> NewClient:
    """Create an OAuth client in the app's store; returns ``(client_id, client_secret)``."""

    names = itertools.count(1)

    def make(scopes: str = "predict", name: str | None = None) -> tuple[str, str]:
        # Client names are unique: number them unless the test names its own.
        return store.clients.create(name or f"partner-{next(names)}", scopes, actor="test")

    return make


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> Cli:
    """``housing-api`` in-process, on the same database, var dir and models as ``settings``."""
    monkeypatch.setenv("VAR_DIR", str(settings.var_dir))
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("MODEL_DIR", str(settings.model_dir))
    runner = CliRunner()

    def run(*args: str, input: str | None = None) -> Result:
        return runner.invoke(cli_app, list(args), input=input, catch_exceptions=False)

    return run
