"""Every setting of the service, read once from the environment and ``.env``.

Nothing reads the environment at import: ``Settings()`` is built by the CLI (or a
test) and handed to ``create_app(settings)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from limits import parse_many
from pydantic import Field, SecretStr, field_validator, model_validator
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
    # While the credential store is unreachable, credentials verified at most this long
    # (plus the 2 s refresh) ago keep working; 0 fails closed (SECURITY.md).
    store_outage_grace_seconds: float = Field(default=60.0, ge=0, le=3600)

    rate_limit_predict: str = "120/minute"
    # Failed /token and /revoke attempts per client address (and, at half of it, per
    # address and client or username): past it, 429 even with correct credentials.
    rate_limit_token: str = "10/minute"  # noqa: S105 - a rate, not a secret
    # Tokens issued (and revocations) per client, or per user, whatever its address.
    rate_limit_token_issuance: str = "30/minute"  # noqa: S105 - a rate, not a secret
    # Failed authentications per client address, on every guarded route.
    rate_limit_auth_failures: str = "30/minute"
    # Per-plan overrides of RATE_LIMIT_PREDICT. An account's plan is the budget all of its
    # credentials share; a credential's own lower plan caps it inside that budget.
    rate_limit_plans: dict[str, str] = Field(
        default_factory=lambda: {
            "free": "30/minute",
            "partner": "600/minute",
            "internal": "6000/minute",
        }
    )
    # Model work in flight per process; past it, 503 + Retry-After at once.
    max_inflight_predictions: int = Field(default=32, ge=1, le=10_000)
    # The whole request body must arrive within this (408 past it), however it is sent.
    body_read_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    # Prediction bodies being received at once per process; past it, 503 + Retry-After.
    max_concurrent_body_reads: int = Field(default=16, ge=1, le=10_000)
    # The longest a rotated API key may keep working beside its successor.
    key_rotation_max_grace_seconds: int = Field(default=7 * 86_400, ge=0, le=90 * 86_400)
    # Active API keys an account may hold (409 past it, over HTTP and in the CLI).
    max_keys_per_account: int = Field(default=20, ge=1, le=100_000)
    # The longest an API key lives: what a key asked for without an expiry gets (or its
    # minter's own expiry, if sooner). Only `keys create --no-expiry` makes one that never
    # expires.
    api_key_max_lifetime_days: int = Field(default=365, ge=1, le=3650)
    max_batch_size: int = Field(default=1000, ge=1, le=100_000)
    max_body_bytes: int = Field(default=MIB, ge=1024)
    forwarded_allow_ips: str = "127.0.0.1"
    # Server-Timing on every answer: always in development, in production only when set
    # (it helps timing attacks on a public API).
    server_timing_enabled: bool = False

    # Prediction log (monitoring.predictionlog): every prediction, written in batches
    # by a background thread; past the queue's capacity new ones are dropped and counted.
    prediction_log_enabled: bool = True
    prediction_log_retention_days: int = Field(default=30, ge=1, le=3650)
    prediction_log_queue_rows: int = Field(default=100_000, ge=1_000, le=10_000_000)
    prediction_log_flush_rows: int = Field(default=5000, ge=1, le=100_000)
    prediction_log_flush_ms: int = Field(default=1000, ge=10, le=60_000)
    # Champion/challenger: also score each request with the other version when the
    # request carries its features, and log that prediction with shadow=true.
    shadow_mode: bool = False
    # feature_drift_psi in /metrics: recomputed every DRIFT_REFRESH_SECONDS (0: off) over
    # the last DRIFT_WINDOW_HOURS of the prediction log.
    drift_refresh_seconds: float = Field(default=300.0, ge=0, le=86_400)
    drift_window_hours: float = Field(default=24.0, gt=0, le=24 * 366)
    # OpenTelemetry: OTLP/HTTP base endpoint (e.g. http://otel-collector:4318); unset, no
    # tracing and no SDK at all. The other OTEL_* variables are read by the SDK itself.
    otel_exporter_otlp_endpoint: str | None = None

    @field_validator(
        "rate_limit_predict",
        "rate_limit_token",
        "rate_limit_token_issuance",
        "rate_limit_auth_failures",
        mode="after",
    )
    @classmethod
    def _valid_limit(cls, value: str) -> str:
        parse_many(value)  # raises ValueError with the offending text
        return value

    @field_validator("rate_limit_plans", mode="after")
    @classmethod
    def _valid_plans(cls, plans: dict[str, str]) -> dict[str, str]:
        for value in plans.values():
            parse_many(value)
        return plans

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.var_dir / 'housing.db'}"
        return self

    @property
    def is_production(self) -> bool:
        return self.app_env == "production"

    @property
    def server_timing(self) -> bool:
        """Whether answers carry Server-Timing."""
        return self.app_env == "development" or self.server_timing_enabled

    @property
    def shared_limits(self) -> bool:
        """Whether the limiter's storage is shared by processes (Redis), not in memory."""
        return bool(self.redis_url) and not str(self.redis_url).startswith("memory://")
