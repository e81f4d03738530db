"""A freshly built app per test, driven over real HTTP semantics by httpx."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.main import create_app
from app.settings import Settings


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def make_settings(tmp_path: Path, trained_model_dir: Path) -> Callable[..., Settings]:
    """Settings isolated in tmp_path; keyword arguments override single fields."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "app_env": "development",
            "var_dir": tmp_path / "var",
            "model_dir": trained_model_dir,
            "redis_url": None,
            # Generous limits: tests of the limits themselves set their own.
            "rate_limit_predict": "100000/minute",
            "rate_limit_token": "1000/minute",
            "rate_limit_auth_failures": "1000/minute",
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


async def open_client(
    app: FastAPI, *, scopes: str = "predict models:read"
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the running app that sends a real bearer token for ``scopes``.

    The token comes from POST /token for a client created in the app's own store,
    exactly as a client app would get one.
    """
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            if scopes:
                client_id, secret = app.state.services.store.clients.create(None, scopes)
                answer = await client.post(
                    "/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
                )
                assert answer.status_code == 200, answer.text
                client.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
            yield client


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async for c in open_client(create_app(settings)):
        yield c
