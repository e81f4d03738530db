"""One app for the security suite, with every credential kind an attacker could hold.

The app is real (``create_app``), its lifespan runs (models, store, verifier), and the
credentials come from its own store and its own ``POST /token``. Limits are high so a
fuzzing run measures the API, not the limiter.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from app.main import create_app
from app.settings import Settings
from auth.scopes import ALL_SCOPES, format_scopes

ALL_SCOPES_TEXT = format_scopes(ALL_SCOPES)


def security_settings(base: Path, model_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "app_env": "development",
        "var_dir": base / "var",
        "database_url": f"sqlite:///{base / 'security.db'}",
        "model_dir": model_dir,
        "redis_url": None,
        "password_grant_enabled": True,
        # Fuzzing sends thousands of requests, many with bad credentials, from one address.
        "rate_limit_predict": "10000000/minute",
        "rate_limit_token": "10000000/minute",
        "rate_limit_auth_failures": "10000000/minute",
        "rate_limit_plans": {},
        "drift_refresh_seconds": 0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture(scope="module")
def clean_environment() -> Iterator[None]:
    """No setting leaks in from the caller's environment."""
    with pytest.MonkeyPatch.context() as patch:
        for name in Settings.model_fields:
            patch.delenv(name.upper(), raising=False)
        yield


@pytest.fixture(scope="module")
def security_app(
    clean_environment: None, tmp_path_factory: pytest.TempPathFactory, trained_model_dir: Path
) -> FastAPI:
    base = tmp_path_factory.mktemp("security")
    return create_app(security_settings(base, trained_model_dir))
