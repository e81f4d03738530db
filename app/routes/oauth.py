"""HTTP for OAuth 2.0: ``/token`` (RFC 6749) and ``/revoke`` (RFC 7009).

The decisions are ``auth.oauth``'s; this module reads the form and shapes the answers.
Errors here follow RFC 6749 §5.2 (``{"error": ...}``), not problem details,
because OAuth client libraries parse exactly that shape.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException

from app.deps import OAuthDep
from app.limits import QuotaLimiter
from app.openapi import problems
from app.settings import Settings
from auth.oauth import BEARER, PARAMETERS, OAuthError

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
FORM = "application/x-www-form-urlencoded"
MAX_FIELD_LENGTH = 4096  # characters of a parameter's value, once decoded
MAX_FIELDS = 20
# A parameter percent-encoded on the wire: up to 12 bytes per character ("%F0%9F%94%91").
MAX_ENCODED_FIELD_BYTES = 16 * MAX_FIELD_LENGTH


async def _read_form(request: Request) -> dict[str, str]:
    """The parameters we know, each at most once (RFC 6749 §3.2), or ``invalid_request``.

    Unknown parameters are ignored, as RFC 6749 §3.1 requires, and never echoed back.
    """
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != FORM:
        raise OAuthError("invalid_request", f"Send the parameters as {FORM}.")
    try:
        form: FormData = await request.form(
            max_fields=MAX_FIELDS, max_part_size=MAX_ENCODED_FIELD_BYTES
        )
    except HTTPException as exc:
        if exc.status_code in (408, 413):  # the body guard's, answered as it declares
            raise
        # Starlette's own 400s (e.g. too many fields) are OAuth errors here.
        raise OAuthError("invalid_request", "The form could not be parsed.") from None
    except Exception:  # malformed encodings of every kind: one clear answer
        raise OAuthError("invalid_request", "The form could not be parsed.") from None
    fields: dict[str, str] = {}
    for name, value in form.multi_items():
        if name not in PARAMETERS:
            continue
        if not isinstance(value, str) or len(value) > MAX_FIELD_LENGTH:
            raise OAuthError(
                "invalid_request", f"Parameters are text of at most {MAX_FIELD_LENGTH} characters."
            )
        if name in fields:
            raise OAuthError("invalid_request", "Each parameter may be sent once (RFC 6749 §3.2).")
        if value:
            fields[name] = value
    return fields


def _form_schema(required: str, properties: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The form as the endpoint reads it: known parameters of bounded length, a client
    secret only with its client id, empty values as if omitted (RFC 6749 §3.1)."""
    bounded = {"maxLength": MAX_FIELD_LENGTH}
    return {
        "requestBody": {
            "required": True,
            "content": {
                FORM: {
                    "schema": {
                        "type": "object",
                        "required": [required],
                        "properties": {
                            name: {"type": "string", **bounded, **extra}
                            for name, extra in properties.items()
                        },
                        "dependentRequired": {"client_secret": ["client_id"]},
                        # Unknown parameters are ignored (RFC 6749 §3.1).
                        "additionalProperties": {"type": "string", **bounded},
                        "propertyNames": {"maxLength": 256},
                        "maxProperties": MAX_FIELDS,
                    }
                }
            },
        }
    }


_CLIENT: dict[str, dict[str, Any]] = {
    "client_id": {"minLength": 1},
    "client_secret": {"format": "password"},
}
TOKEN_FORM_SCHEMA = _form_schema(
    "grant_type",
    {
        "grant_type": {"enum": ["client_credentials", "password"]},
        "scope": {"description": "Space-separated scopes."},
        **_CLIENT,
        "username": {},
        "password": {"format": "password"},
    },
)

OAUTH_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
}


def _oauth_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        status: {
            "description": "RFC 6749 §5.2 error.",
            "content": {"application/json": {"schema": OAUTH_ERROR_SCHEMA}},
        }
        for status in statuses
    }


TOKEN_RESPONSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["access_token", "token_type", "expires_in", "scope"],
    "properties": {
        "access_token": {"type": "string"},
        "token_type": {"type": "string", "enum": [BEARER]},
        "expires_in": {"type": "integer"},
        "scope": {"type": "string"},
    },
}


REVOKE_FORM_SCHEMA = _form_schema(
    "token",
    {"token": {"minLength": 1}, "token_type_hint": {"enum": ["access_token"]}, **_CLIENT},
)


def _address(request: Request) -> str | None:
    return request.client.host if request.client else None


def _refused(request: Request, error: OAuthError) -> Response:
    """The RFC 6749 §5.2 answer, never cached; the request log counts the reason."""
    request.state.auth_failure = error.error
    return JSONResponse(
        {"error": error.error, "error_description": error.description},
        status_code=error.status,
        headers=NO_STORE | error.headers,
    )


def build_router(limiter: QuotaLimiter, settings: Settings) -> APIRouter:
    """/token and /revoke. Their limits are ``auth.oauth``'s: failures per address and
    per (address, client), issuance per client; none is SlowAPI's."""
    router = APIRouter(tags=["oauth"])

    @router.post(
        "/token",
        summary="Issue an access token (client credentials; password grant when enabled)",
        openapi_extra=TOKEN_FORM_SCHEMA,
        response_class=JSONResponse,
        responses={
            200: {"content": {"application/json": {"schema": TOKEN_RESPONSE_SCHEMA}}},
            **_oauth_errors(400, 401, 429, 503),
            # The body guard answers before the endpoint runs: problem details.
            **problems(408, 413),
        },
    )
    async def token(request: Request, oauth: OAuthDep) -> Response:
        try:
            grant = await oauth.issue(
                lambda: _read_form(request),
                request.headers.get("authorization"),
                _address(request),
            )
        except OAuthError as exc:
            return _refused(request, exc)
        return JSONResponse(
            {
                "access_token": grant.access_token,
                "token_type": BEARER,
                "expires_in": grant.expires_in,
                "scope": grant.scope,
            },
            headers=NO_STORE | dict(grant.headers),
        )

    @router.post(
        "/revoke",
        summary="Revoke an access token (RFC 7009)",
        openapi_extra=REVOKE_FORM_SCHEMA,
        response_class=Response,
        responses={
            200: {"description": "Revoked, or unknown (RFC 7009 §2.2)."},
            **_oauth_errors(400, 401, 429, 503),
            **problems(408, 413),
        },
    )
    async def revoke(request: Request, oauth: OAuthDep) -> Response:
        try:
            await oauth.revoke(
                lambda: _read_form(request),
                request.headers.get("authorization"),
                _address(request),
            )
        except OAuthError as exc:
            return _refused(request, exc)
        return Response(status_code=200, headers=NO_STORE)

    return router
