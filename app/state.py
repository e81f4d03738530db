"""What the app factory and its lifespan build, as one typed object.

``create_app`` builds :class:`Services` and the lifespan completes it (store,
verifier, models, prediction log) before the first request. Routes read it through
the aliases in ``app.deps``; :func:`services` is the one reader of ``app.state``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from starlette.requests import HTTPConnection

from app.limits import FailureThrottle, IssuanceBudget, PredictionBudget, QuotaLimiter
from app.settings import Settings
from app.single_flight import SingleFlight
from auth.jwt_keys import SigningKeys
from auth.oauth import OAuthServer
from auth.store import CredentialStore
from auth.verifier import CredentialVerifier
from ml.artifacts import LoadedModel
from monitoring.metrics import Metrics
from monitoring.predictionlog import PredictionLogWriter

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from app.reload import ModelReloader

ReadinessCheck = Callable[[], Awaitable[bool]]
T = TypeVar("T")


class NotStarted(RuntimeError):
    """A lifespan-built part was read before the lifespan ran (a wiring bug)."""


@dataclass(eq=False)
class Services:
    settings: Settings
    metrics: Metrics
    limiter: QuotaLimiter
    signing_keys: SigningKeys
    token_throttle: FailureThrottle  # failed /token and /revoke attempts per address
    token_pair_throttle: FailureThrottle  # ... per (address, client or username)
    token_issuance: IssuanceBudget  # tokens issued and revocations per client or user
    auth_throttle: FailureThrottle
    budget: PredictionBudget
    credential_reads: SingleFlight = field(default_factory=SingleFlight)
    readiness_checks: dict[str, ReadinessCheck] = field(default_factory=dict)
    # Replaced whole by a reload (one assignment: atomic for every reader).
    models: dict[str, LoadedModel] = field(default_factory=dict)
    # None while the prediction log is off.
    prediction_log: PredictionLogWriter | None = None
    _store: CredentialStore | None = None
    _verifier: CredentialVerifier | None = None
    _oauth: OAuthServer | None = None
    _reloader: ModelReloader | None = None
    _log_engine: Engine | None = None

    def start_identity(self, store: CredentialStore, verifier: CredentialVerifier) -> None:
        settings = self.settings
        self._store, self._verifier = store, verifier
        self._oauth = OAuthServer(
            store=store,
            keys=self.signing_keys,
            verifier=verifier,
            failures=self.token_throttle,
            pair_failures=self.token_pair_throttle,
            issuance=self.token_issuance,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            ttl_seconds=settings.access_token_ttl_seconds,
            password_grant_enabled=settings.password_grant_enabled,
        )

    def start_operations(self, reloader: ModelReloader, log_engine: Engine) -> None:
        self._reloader, self._log_engine = reloader, log_engine

    @property
    def store(self) -> CredentialStore:
        return _started(self._store, "store")

    @property
    def verifier(self) -> CredentialVerifier:
        return _started(self._verifier, "verifier")

    @property
    def oauth(self) -> OAuthServer:
        """The /token and /revoke rules (``auth.oauth``) over this app's parts."""
        return _started(self._oauth, "OAuth server")

    @property
    def reloader(self) -> ModelReloader:
        return _started(self._reloader, "model reloader")

    @property
    def prediction_log_engine(self) -> Engine:
        """The prediction log's own pool (the writer holds one connection of it)."""
        return _started(self._log_engine, "prediction log engine")


def _started(part: T | None, name: str) -> T:
    if part is None:
        raise NotStarted(f"the {name} is built by the lifespan, which has not run")
    return part


def services(connection: HTTPConnection) -> Services:
    built: Services = connection.app.state.services
    return built
