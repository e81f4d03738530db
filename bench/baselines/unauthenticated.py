"""Our app with authentication replaced by a fixed caller: issue 8's "unauthenticated twin".

Everything else is the real app (``app.asgi.build``): middleware, body checks, the rate
limiter (keyed by the same kind of principal id), the predict path. Only
``app.security.authenticate`` is overridden, by a coroutine that sets the principal
the limiter keys on and returns it. Legitimate in a benchmark baseline, never in tests.
"""

from __future__ import annotations

from fastapi import FastAPI, Request

from app.asgi import build as build_ours
from app.security import authenticate
from auth.principal import Principal
from auth.scopes import PREDICT

CALLER = Principal(kind="client", subject="bench-unauthenticated", scopes=frozenset({PREDICT}))


async def fixed_caller(request: Request) -> Principal:
    request.state.principal = CALLER
    return CALLER


def build() -> FastAPI:
    app = build_ours()
    app.dependency_overrides[authenticate] = fixed_caller
    return app
