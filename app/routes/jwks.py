"""Public verification keys (RFC 7517), so other services can check our tokens."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.deps import SigningKeysDep

router = APIRouter(tags=["oauth"])


@router.get("/.well-known/jwks.json", summary="Public signing keys (empty for HS256)")
async def jwks(keys: SigningKeysDep) -> JSONResponse:
    return JSONResponse(keys.jwks(), headers={"Cache-Control": "public, max-age=300"})
