"""The app factory: ``create_app(settings)`` builds everything, nothing is global."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.routing import APIRoute
from slowapi.errors import RateLimitExceeded
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from app.body_limit import MaxBodySizeMiddleware
from app.errors import install_error_handlers
from app.guard import Policy, PredictionGuard
from app.lifespan import lifespan
from app.limits import (
    FailureThrottle,
    IssuanceBudget,
    PredictionBudget,
    QuotaHeaders,
    build_limiter,
    half_limit,
    rate_limited,
)
from app.openapi import install as install_openapi
from app.openapi import operation_id
from app.quota import Quota
from app.request_context import RequestContextMiddleware
from app.routes import admin, docs, health, jwks, models, oauth, predict, usage
from app.routes import keys as key_routes
from app.routes import metrics as metrics_route
from app.settings import Settings
from app.state import Services
from app.tracing import TracingMiddleware
from auth.scopes import PREDICT
from auth.wiring import pepper, signing_keys
from monitoring.metrics import Metrics
from monitoring.tracing import build_tracer

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

# The prediction routes, behind the guard layer: a single prediction is charged up front,
# a batch only checked there and charged its whole cost once its rows are counted.
GUARDED_ROUTES = {
    "/v1/predict": Policy(frozenset({PREDICT}), cost=1),
    "/v2/predict": Policy(frozenset({PREDICT}), cost=1),
    "/v1/predict/batch": Policy(frozenset({PREDICT}), cost=0),
    "/v2/predict/batch": Policy(frozenset({PREDICT}), cost=0),
}

API_DESCRIPTION = """
Predicts 1987 sale prices of houses in Windsor, Ontario, from lot size, rooms and amenities.

* **v1** uses five numeric features; **v2** adds six yes/no amenities.
* Errors are RFC 9457 problem details (`application/problem+json`).
"""


def create_app(settings: Settings, *, span_exporter: SpanExporter | None = None) -> FastAPI:
    """Build the service. Bad signing keys or pepper raise ``ConfigError`` here, at once.

    Spans go over OTLP to OTEL_EXPORTER_OTLP_ENDPOINT, or to ``span_exporter`` (tests).
    """
    keys = signing_keys(settings)
    pepper(settings)  # fail now, not on the first request, if it is missing or weak
    limiter = build_limiter(settings)
    built = Services(
        budget=PredictionBudget(Quota(settings.redis_url), settings),
        settings=settings,
        metrics=Metrics(),
        limiter=limiter,
        signing_keys=keys,
        token_throttle=FailureThrottle(limiter, settings.rate_limit_token, "token-fail"),
        token_pair_throttle=FailureThrottle(
            limiter, half_limit(settings.rate_limit_token), "token-pair-fail"
        ),
        token_issuance=IssuanceBudget(limiter, settings.rate_limit_token_issuance, "token-issue"),
        auth_throttle=FailureThrottle(limiter, settings.rate_limit_auth_failures, "auth-fail"),
    )
    app = FastAPI(
        title="Housing price API",
        version="1.0.0",
        description=API_DESCRIPTION,
        lifespan=partial(lifespan, built),
        # /docs is served by app.routes.docs from local assets (no CDN, strict CSP);
        # ReDoc would need a CDN, so it is off.
        docs_url=None,
        redoc_url=None,
        # A trailing slash is an unknown path (404), never a redirect whose absolute
        # Location would be built from the request's Host header.
        redirect_slashes=False,
        generate_unique_id_function=operation_id,
    )
    install_openapi(app, password_grant_enabled=settings.password_grant_enabled)
    app.state.services = built
    app.state.limiter = limiter  # SlowAPI's decorators look for it under this name
    install_error_handlers(app)
    app.add_exception_handler(RateLimitExceeded, rate_limited)

    # Middleware runs outermost-last-added: request context, proxy headers, the guard
    # layer (prediction routes), then the body limit and quota headers of the others.
    app.add_middleware(QuotaHeaders, limiter=limiter)
    app.add_middleware(
        MaxBodySizeMiddleware,
        max_bytes=settings.max_body_bytes,
        read_timeout=settings.body_read_timeout_seconds,
        skip_paths=frozenset(GUARDED_ROUTES),
    )
    app.add_middleware(PredictionGuard, services=built, routes=GUARDED_ROUTES)
    # X-Forwarded-For/-Proto are believed only from FORWARDED_ALLOW_IPS (the Nginx host);
    # from anyone else they are ignored and the TCP peer stays the client address.
    app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.forwarded_allow_ips)
    # Outermost: every answer, even a shed or refused one, has a request id and a log event.
    app.add_middleware(
        RequestContextMiddleware, metrics=built.metrics, server_timing=settings.server_timing
    )
    # Outside even that: the request's span (and trace id) covers its log event too.
    tracing = build_tracer(settings.otel_exporter_otlp_endpoint, exporter=span_exporter)
    app.add_middleware(TracingMiddleware, tracing=tracing)

    app.include_router(health.router)
    app.include_router(predict.build_router(settings))
    app.include_router(models.build_router(limiter, settings))
    app.include_router(oauth.build_router(limiter, settings))
    app.include_router(jwks.router)
    app.include_router(metrics_route.router)
    app.include_router(admin.build_router(limiter, settings))
    app.include_router(key_routes.build_router(limiter, settings))
    app.include_router(usage.build_router(limiter, settings))
    _every_guard_only_route_is_guarded(app)
    docs.install(app)
    return app


def _every_guard_only_route_is_guarded(app: FastAPI) -> None:
    """A route that declares its security for OpenAPI only (no dependency checks it) is
    safe only behind the guard layer: refuse to build an app where one is not."""
    for route in app.routes:
        if not isinstance(route, APIRoute):
            continue
        if (route.openapi_extra or {}).get("security") and route.path not in GUARDED_ROUTES:
            raise RuntimeError(f"{route.path} declares security but the guard does not check it")
