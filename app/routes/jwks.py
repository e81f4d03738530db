"""Public verification keys (RFC 7517), so other services can check our tokens."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter(tags=["oauth"])


@router.get("/.well-known/jwks.json", summary="Public signing keys (empty for HS256)")
async def jwks(request: Request) -> JSONResponse:
    body: dict[str, Any] = request.app.state.signing_keys.jwks()
    return JSONResponse(body, headers={"Cache-Control": "public, max-age=300"})
