"""Apps, servers and model directories for the operations tests.

Everything is real: the app is built by ``create_app`` and driven over HTTP with real
credentials; the prediction log is written by its thread into a real SQLite file (or
PostgreSQL); servers are ``housing-api serve`` processes stopped by PID.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine

from app.main import create_app
from app.settings import Settings
from monitoring.predictionlog import make_log_engine


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting leaks in from the caller's environment or a stray ``.env``."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def model_dir(tmp_path: Path, trained_model_dir: Path) -> Path:
    """A copy of the session's models that a test may replace or damage."""
    target = tmp_path / "models"
    shutil.copytree(trained_model_dir, target)
    return target


@pytest.fixture
def make_settings(tmp_path: Path, model_dir: Path) -> Callable[..., Settings]:
    """Settings isolated in tmp_path; keyword arguments override single fields."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "app_env": "development",
            "var_dir": tmp_path / "var",
            "model_dir": model_dir,
            "redis_url": None,
            "rate_limit_predict": "100000/minute",
            "rate_limit_token": "1000/minute",
            "rate_limit_auth_failures": "1000/minute",
            "drift_refresh_seconds": 0,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def log_engine(settings: Settings) -> Iterator[Engine]:
    """A second engine on the app's database, for reading what the log wrote."""
    engine = make_log_engine(settings.database_url)
    yield engine
    engine.dispose()


def http(app: FastAPI, **headers: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver", headers=headers)


def api_key(app: FastAPI, scopes: str) -> dict[str, str]:
    """``X-API-Key`` headers for a new key with ``scopes`` in the running app's store."""
    _key_id, key = app.state.services.store.api_keys.create("operations-test", scopes)
    return {"X-API-Key": key}


@pytest.fixture
async def running(settings: Settings) -> AsyncIterator[FastAPI]:
    """The app built from ``settings``, its lifespan open."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


def flush(app: FastAPI) -> None:
    """Wait until the prediction log has written everything submitted so far."""
    assert app.state.services.prediction_log.flush(timeout=10.0)


def wait_until(condition: Callable[[], bool], timeout: float = 10.0, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(step)
