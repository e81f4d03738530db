"""In production a weak or missing signing key, or a missing pepper, stops the start."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from app.main import create_app
from app.settings import Settings
from auth.errors import ConfigError
from tests.auth_http.conftest import write_private_key

STRONG_PEPPER = secrets.token_urlsafe(48)


def production(make_settings: Callable[..., Settings], **overrides: object) -> Settings:
    values: dict[str, object] = {"app_env": "production", "api_key_pepper": STRONG_PEPPER}
    values.update(overrides)
    return make_settings(**values)


def assert_refused_without_leak(settings: Settings, secret: str) -> str:
    with pytest.raises(ConfigError) as caught:
        create_app(settings)
    message = str(caught.value)
    assert "JWT_SECRET_KEY" in message
    assert secret not in message
    assert "\n" not in message.strip()
    return message


@pytest.mark.parametrize("secret", ["k3Y-sh0rt", "Zq8#a" * 6])
def test_short_hs256_secret_stops_the_start(
    make_settings: Callable[..., Settings], secret: str
) -> None:
    assert len(secret.encode()) < 32
    message = assert_refused_without_leak(production(make_settings, jwt_secret_key=secret), secret)
    assert "32" in message


@pytest.mark.parametrize(
    "secret",
    [
        "changeme",
        "your-256-bit-secret",
        "09d25e094faa6ca2556c818166b7a9563b93f7099f6f0f4caa6cf63b88e8d3e7",
        "CHANGE_ME_to_a_long_random_value_before_going_live",
        "an-example-secret-that-is-long-enough-to-pass-length",
    ],
)
def test_placeholder_secret_stops_the_start(
    make_settings: Callable[..., Settings], secret: str
) -> None:
    message = assert_refused_without_leak(production(make_settings, jwt_secret_key=secret), secret)
    assert "placeholder" in message


def test_missing_secret_stops_the_start(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ConfigError, match="JWT_SECRET_KEY"):
        create_app(production(make_settings, jwt_secret_key=None))


def test_missing_key_file_stops_the_start(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = production(
        make_settings, jwt_algorithm="ES256", jwt_private_key_file=tmp_path / "absent.pem"
    )
    with pytest.raises(ConfigError, match="JWT_PRIVATE_KEY_FILE"):
        create_app(settings)


def test_world_readable_key_file_stops_the_start(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    key_file = write_private_key(tmp_path / "shared.pem")
    key_file.chmod(0o644)
    settings = production(make_settings, jwt_algorithm="ES256", jwt_private_key_file=key_file)
    with pytest.raises(ConfigError, match=r"JWT_PRIVATE_KEY_FILE .* readable by group or others"):
        create_app(settings)


def test_strong_secret_and_pepper_start(make_settings: Callable[..., Settings]) -> None:
    """The control: production starts when both are sound."""
    create_app(production(make_settings, jwt_secret_key=secrets.token_urlsafe(48)))


def test_cli_serve_in_production_without_pepper_exits_with_one_line(
    tmp_path: Path, trained_model_dir: Path
) -> None:
    jwt_secret = secrets.token_urlsafe(48)
    env = {
        name: value
        for name, value in os.environ.items()
        if name.upper() not in {field.upper() for field in Settings.model_fields}
    }
    env |= {
        "APP_ENV": "production",
        "JWT_SECRET_KEY": jwt_secret,
        "VAR_DIR": str(tmp_path / "var"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'prod.db'}",
        "MODEL_DIR": str(trained_model_dir),
    }
    executable = Path(sys.executable).with_name("housing-api")
    result = subprocess.run(
        [str(executable), "serve", "--port", "1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "API_KEY_PEPPER" in lines[0]
    assert jwt_secret not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "var" / "api_key_pepper").exists()


@pytest.mark.parametrize("redis_url", [None, "memory://"])
def test_cli_serve_in_production_with_workers_and_no_redis_exits_with_one_line(
    tmp_path: Path, trained_model_dir: Path, redis_url: str | None
) -> None:
    """More than one worker with the in-memory limiter would make every limit per
    worker (RATE_LIMIT_TOKEN=5/minute let 10 of 20 attempts through): in production
    that is a start-up error, before gunicorn starts, not a warning."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name.upper() not in {field.upper() for field in Settings.model_fields}
    }
    env |= {
        "APP_ENV": "production",
        "JWT_SECRET_KEY": secrets.token_urlsafe(48),
        "API_KEY_PEPPER": STRONG_PEPPER,
        "VAR_DIR": str(tmp_path / "var"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'prod.db'}",
        "MODEL_DIR": str(trained_model_dir),
    }
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    executable = Path(sys.executable).with_name("housing-api")
    result = subprocess.run(
        [str(executable), "serve", "--port", "1", "--workers", "2"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: APP_ENV=production with 2 workers needs REDIS_URL")
    assert "gunicorn" not in result.stderr.lower()
    assert "Traceback" not in result.stderr
