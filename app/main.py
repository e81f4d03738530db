"""The app factory: ``create_app(settings)`` builds everything, nothing is global."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from app.errors import install_error_handlers
from app.identity import open_store, pepper, signing_keys
from app.middleware import MaxBodySizeMiddleware
from app.routes import health, jwks, models, oauth, predict
from app.settings import Settings
from auth.verifier import CredentialVerifier
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
        with open_store(settings) as store:
            app.state.store = store
            app.state.verifier = CredentialVerifier(
                store, keys, issuer=settings.jwt_issuer, audience=settings.jwt_audience
            )

            async def models_loaded() -> bool:
                return all(version in app.state.models for version in MODEL_VERSIONS)

            async def database() -> bool:
                return await run_in_threadpool(store.ping)

            app.state.readiness_checks.update(models=models_loaded, database=database)
            yield

    app = FastAPI(
        title="Housing price API",
        version="1.0.0",
        description=API_DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.signing_keys = keys
    app.state.readiness_checks = {}
    install_error_handlers(app)
    app.add_middleware(MaxBodySizeMiddleware, max_bytes=settings.max_body_bytes)
    app.include_router(health.router)
    app.include_router(predict.router)
    app.include_router(models.router)
    app.include_router(oauth.router)
    app.include_router(jwks.router)
    return app
