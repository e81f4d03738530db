"""Apps with small limits, and callers with real credentials, for the limiter's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.main import create_app
from app.settings import Settings
from tests.support.houses import V1_HOUSE

HOUSE = V1_HOUSE
PROXY = "127.0.0.1"  # FORWARDED_ALLOW_IPS in these tests: the Nginx host
OUTSIDER = "198.51.100.20"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def build_app(tmp_path: Path, trained_model_dir: Path) -> Callable[..., FastAPI]:
    def build(**overrides: Any) -> FastAPI:
        values: dict[str, Any] = {
            "var_dir": tmp_path / "var",
            "model_dir": trained_model_dir,
            "redis_url": None,
            "forwarded_allow_ips": PROXY,
            "rate_limit_predict": "1000/minute",
            "rate_limit_token": "1000/minute",
            "rate_limit_auth_failures": "1000/minute",
        }
        values.update(overrides)
        return create_app(Settings(_env_file=None, **values))

    return build


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[FastAPI]:
    async with app.router.lifespan_context(app):
        yield app


def http(app: FastAPI, peer: str = OUTSIDER, **headers: str) -> httpx.AsyncClient:
    """A client whose TCP peer address is ``peer`` (a proxy, or a client on its own)."""
    transport = httpx.ASGITransport(app=app, client=(peer, 51000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver", headers=headers)
