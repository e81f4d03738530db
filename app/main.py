"""The app factory: ``create_app(settings)`` builds everything, nothing is global."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from slowapi.errors import RateLimitExceeded
from starlette.concurrency import run_in_threadpool
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from app.errors import install_error_handlers
from app.limits import FailureThrottle, build_limiter, rate_limited
from app.middleware import LoadSheddingMiddleware, MaxBodySizeMiddleware
from app.observability import metrics as metrics_routes
from app.observability.metrics import Metrics
from app.observability.middleware import RequestContextMiddleware
from app.operations.runtime import running_operations
from app.routes import admin, docs, health, jwks, models, oauth, predict, usage
from app.routes import keys as key_routes
from app.security import SingleFlight
from app.settings import Settings
from auth.verifier import CredentialVerifier
from auth.wiring import open_store, pepper, signing_keys
from ml.artifacts import load_all
from ml.features import MODEL_VERSIONS

API_DESCRIPTION = """
Predicts 1987 sale prices of houses in Windsor, Ontario, from lot size, rooms and amenities.

* **v1** uses five numeric features; **v2** adds six yes/no amenities.
* Errors are RFC 9457 problem details (`application/problem+json`).
"""


def create_app(settings: Settings) -> FastAPI:
    """Build the service. Bad signing keys or pepper raise ``ConfigError`` here, at once."""
    keys = signing_keys(settings)
    pepper(settings)  # fail now, not on the first request, if it is missing or weak

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Verified before use: a tampered artifact stops the start (ArtifactError).
        app.state.models = load_all(settings.model_dir)
        for model in app.state.models.values():
            estimator = str(model.manifest["estimator"]["name"])
            metrics.model_info.labels(model.version, model.sha256, estimator).set(1)
        with open_store(settings) as store:
            app.state.store = store
            app.state.verifier = CredentialVerifier(
                store, keys, issuer=settings.jwt_issuer, audience=settings.jwt_audience
            )

            async def models_loaded() -> bool:
                return all(version in app.state.models for version in MODEL_VERSIONS)

            async def database() -> bool:
                return await run_in_threadpool(store.ping)

            async def limiter_storage() -> bool:
                return await run_in_threadpool(limiter.storage_ok)

            app.state.readiness_checks.update(
                models=models_loaded, database=database, limiter=limiter_storage
            )
            # Prediction log, drift gauges, SIGHUP reloads; on shutdown (after uvicorn
            # has finished the in-flight requests) the prediction log is written out.
            async with running_operations(app, settings, metrics):
                yield

    app = FastAPI(
        title="Housing price API",
        version="1.0.0",
        description=API_DESCRIPTION,
        lifespan=lifespan,
        # /docs is served by app.routes.docs from local assets (no CDN, strict CSP);
        # ReDoc would need a CDN, so it is off.
        docs_url=None,
        redoc_url=None,
    )
    limiter = build_limiter(settings)
    metrics = Metrics()
    app.state.metrics = metrics
    app.state.settings = settings
    app.state.signing_keys = keys
    app.state.limiter = limiter
    app.state.token_throttle = FailureThrottle(limiter, settings.rate_limit_token, "token-fail")
    app.state.auth_throttle = FailureThrottle(
        limiter, settings.rate_limit_auth_failures, "auth-fail"
    )
    app.state.credential_reads = SingleFlight()
    app.state.readiness_checks = {}
    install_error_handlers(app)
    app.add_exception_handler(RateLimitExceeded, rate_limited)

    # Middleware runs outermost-last-added: proxy headers first, then shedding, then body.
    app.add_middleware(
        MaxBodySizeMiddleware,
        max_bytes=settings.max_body_bytes,
        read_timeout=settings.body_read_timeout_seconds,
    )
    app.add_middleware(
        LoadSheddingMiddleware,
        limit=settings.max_inflight_predictions,
        path_prefixes=("/v1/predict", "/v2/predict"),
    )
    # X-Forwarded-For/-Proto are believed only from FORWARDED_ALLOW_IPS (the Nginx host);
    # from anyone else they are ignored and the TCP peer stays the client address.
    app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.forwarded_allow_ips)
    # Outermost: every answer, even a shed or refused one, has a request id and a log event.
    app.add_middleware(RequestContextMiddleware, metrics=metrics)

    app.include_router(health.router)
    app.include_router(predict.build_router(limiter, settings))
    app.include_router(models.build_router(limiter, settings))
    app.include_router(oauth.build_router(limiter, settings))
    app.include_router(jwks.router)
    app.include_router(metrics_routes.router)
    app.include_router(admin.build_router(limiter, settings))
    app.include_router(key_routes.build_router(limiter, settings))
    app.include_router(usage.build_router(limiter, settings))
    docs.install(app)
    return app
