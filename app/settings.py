"""Every setting of the service, read once from the environment and ``.env``.

Nothing reads the environment at import: ``Settings()`` is built by the CLI (or a
test) and handed to ``create_app(settings)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        secrets_dir=None,
    )

    app_env: Literal["development", "production"] = "development"
    var_dir: Path = Path("var")
    database_url: str = Field(
        default="", description="SQLAlchemy URL; default a SQLite file under VAR_DIR."
    )
    redis_url: str | None = None

    model_dir: Path = Path("models")
    data_path: Path = Path("data/housing.csv")

    jwt_algorithm: Literal["HS256", "RS256", "ES256"] = "HS256"
    jwt_secret_key: SecretStr | None = None
    jwt_private_key_file: Path | None = None
    jwt_previous_public_key_file: Path | None = None
    jwt_issuer: str = "housing-api"
    jwt_audience: str = "housing-api"
    access_token_ttl_seconds: int = Field(default=900, ge=30, le=86_400)
    password_grant_enabled: bool = False
    api_key_pepper: SecretStr | None = None

    rate_limit_predict: str = "120/minute"
    rate_limit_token: str = "10/minute"  # noqa: S105 - a rate, not a secret
    max_batch_size: int = Field(default=1000, ge=1, le=100_000)
    max_body_bytes: int = Field(default=MIB, ge=1024)
    forwarded_allow_ips: str = "127.0.0.1"

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.var_dir / 'housing.db'}"
        return self

    @property
    def is_production(self) -> bool:
        return self.app_env == "production"
