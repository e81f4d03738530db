"""Liveness and readiness, public and cheap: load balancers call them constantly."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.openapi import problems
from app.schemas import Health, Readiness
from app.state import services

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    summary="Readiness: models, database and limiter storage are usable",
    response_model=Readiness,
    responses={
        503: {"model": Readiness, "description": "A dependency is not usable."},
        **problems(429),
    },
)
async def readyz(request: Request) -> JSONResponse:
    checks = services(request).readiness_checks
    results: dict[str, str] = {}
    for name, check in checks.items():
        try:
            ok = await check()
        except Exception:  # a readiness probe reports failure, it never raises
            ok = False
        results[name] = "ok" if ok else "failing"
    ready = all(value == "ok" for value in results.values())
    body = Readiness(status="ready" if ready else "not ready", checks=results)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
