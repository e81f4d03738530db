"""OAuth 2.0 token issuance (RFC 6749) and revocation (RFC 7009).

Errors here follow RFC 6749 §5.2 (``{"error": ...}``), not problem details,
because OAuth client libraries parse exactly that shape.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException

from app.deps import SettingsDep
from app.limits import FailureThrottle, QuotaLimiter, client_ip
from app.openapi import problems
from app.settings import Settings
from auth.errors import PasswordCheckBusy
from auth.jwt_keys import SigningKeys
from auth.scopes import UnknownScopeError, format_scopes, parse_scopes
from auth.store import ClientRecord, CredentialStore
from auth.tokens import InvalidTokenError, decode_access_token, issue_access_token
from auth.verifier import CredentialVerifier

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
FORM = "application/x-www-form-urlencoded"
MAX_FIELD_LENGTH = 4096  # characters of a parameter's value, once decoded
MAX_FIELDS = 20
# A parameter percent-encoded on the wire: up to 12 bytes per character ("%F0%9F%94%91").
MAX_ENCODED_FIELD_BYTES = 16 * MAX_FIELD_LENGTH
FIRST_PARTY_CLIENT = "first-party"
BEARER = "bearer"  # RFC 6749 §7.1 token type
# Every parameter /token and /revoke read; anything else is ignored (RFC 6749 §3.1).
PARAMETERS = frozenset(
    {
        "grant_type",
        "scope",
        "client_id",
        "client_secret",
        "username",
        "password",
        "token",
        "token_type_hint",
    }
)


class OAuthError(Exception):
    """An RFC 6749 §5.2 error answer."""

    def __init__(
        self,
        error: str,
        description: str,
        *,
        status: int = 400,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse(
            {"error": self.error, "error_description": self.description},
            status_code=self.status,
            headers=NO_STORE | self.headers,
        )


def _invalid_client(used_basic: bool) -> OAuthError:
    scheme = "Basic" if used_basic else "Bearer"
    return OAuthError(
        "invalid_client",
        "Client authentication failed.",
        status=401,
        headers={"WWW-Authenticate": f'{scheme} realm="housing-api"'},
    )


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
            raise OAuthError("invalid_request", f"Parameter '{name}' is not valid.")
        if name in fields:
            raise OAuthError("invalid_request", f"Parameter '{name}' was sent more than once.")
        if value:
            fields[name] = value
    return fields


@dataclass(frozen=True)
class ClientCredentials:
    client_id: str
    secret: str
    used_basic: bool


def _client_credentials(request: Request, form: dict[str, str]) -> ClientCredentials | None:
    """RFC 6749 §2.3.1: HTTP Basic (form-urlencoded parts) or both in the form, not both."""
    header = request.headers.get("authorization")
    in_form = "client_secret" in form
    if header is not None:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            raise _invalid_client(used_basic=True)
        if in_form:
            raise OAuthError("invalid_request", "Use one client authentication method, not two.")
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise _invalid_client(used_basic=True) from None
        client_id, sep, secret = decoded.partition(":")
        if not sep:
            raise _invalid_client(used_basic=True)
        client_id, secret = unquote_plus(client_id), unquote_plus(secret)
        if "client_id" in form and form["client_id"] != client_id:
            raise OAuthError("invalid_request", "client_id differs from the Basic credentials.")
        return ClientCredentials(client_id, secret, used_basic=True)
    if in_form:
        if "client_id" not in form:
            raise OAuthError("invalid_request", "client_secret needs client_id.")
        return ClientCredentials(form["client_id"], form["client_secret"], used_basic=False)
    return None


async def _throttled(throttle: FailureThrottle, name: str) -> None:
    """429 once ``name`` has failed too often, whatever this attempt's credentials."""
    headers = await throttle.refusal_async(name)
    if headers is not None:
        raise OAuthError(
            "slow_down", "Too many failed attempts; retry later.", status=429, headers=headers
        )


async def _authenticate_client(
    request: Request, credentials: ClientCredentials, ip: str | None
) -> ClientRecord:
    store: CredentialStore = request.app.state.store
    throttle: FailureThrottle = request.app.state.token_throttle
    name = f"client:{credentials.client_id[:200]}"
    await _throttled(throttle, name)
    client = await run_in_threadpool(
        lambda: store.clients.authenticate(credentials.client_id, credentials.secret, ip=ip)
    )
    if client is None:
        await throttle.failed_async(name)
        raise _invalid_client(credentials.used_basic)
    return client


def _granted_scopes(requested: str | None, allowed: frozenset[str]) -> frozenset[str]:
    """RFC 6749 §3.3: a subset of what the caller holds; all of it when none is asked."""
    try:
        wanted = parse_scopes(requested) if requested is not None else allowed
    except UnknownScopeError as exc:
        raise OAuthError("invalid_scope", str(exc)) from None
    if not wanted <= allowed:
        raise OAuthError("invalid_scope", "The requested scope exceeds what this caller holds.")
    if not wanted:
        raise OAuthError("invalid_scope", "No scope would be granted.")
    return wanted


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


def _state(request: Request) -> tuple[CredentialStore, SigningKeys, CredentialVerifier]:
    state = request.app.state
    return state.store, state.signing_keys, state.verifier


async def _issue(request: Request, settings: Settings) -> Response:
    store, keys, _ = _state(request)
    ip = request.client.host if request.client else None
    form = await _read_form(request)
    credentials = _client_credentials(request, form)
    grant_type = form.get("grant_type")
    if grant_type is None:
        raise OAuthError("invalid_request", "grant_type is required.")

    if grant_type == "client_credentials":
        if credentials is None:
            raise _invalid_client(used_basic=False)
        client = await _authenticate_client(request, credentials, ip)
        scopes = _granted_scopes(form.get("scope"), client.scopes)
        subject, client_id, kind, plan = client.client_id, client.client_id, "client", client.plan
    elif grant_type == "password" and settings.password_grant_enabled:
        client_id = FIRST_PARTY_CLIENT
        if credentials is not None:  # optional for the password grant, but checked if sent
            client_id = (await _authenticate_client(request, credentials, ip)).client_id
        username, password = form.get("username"), form.get("password")
        if username is None or password is None:
            raise OAuthError("invalid_request", "username and password are required.")
        throttle: FailureThrottle = request.app.state.token_throttle
        name = f"user:{username[:200]}"
        await _throttled(throttle, name)
        try:
            user = await run_in_threadpool(
                lambda: store.users.authenticate(username, password, ip=ip)
            )
        except PasswordCheckBusy:
            raise OAuthError(
                "temporarily_unavailable",
                "Too many logins at once; retry shortly.",
                status=503,
                headers={"Retry-After": "1"},
            ) from None
        if user is None:
            await throttle.failed_async(name)
            raise OAuthError("invalid_grant", "The username or password is incorrect.")
        scopes = _granted_scopes(form.get("scope"), user.scopes)
        subject, kind, plan = user.username, "user", user.plan
    else:
        raise OAuthError("unsupported_grant_type", f"Supported: {_grants(settings)}.")

    issued = issue_access_token(
        keys,
        subject=subject,
        client_id=client_id,
        scopes=scopes,
        kind=kind,
        plan=plan,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        ttl_seconds=settings.access_token_ttl_seconds,
    )
    await run_in_threadpool(
        lambda: store.audit.record(
            "token.issued", f"{kind}:{subject}", issued.jti, {"scope": issued.scope}, ip=ip
        )
    )
    return JSONResponse(
        {
            "access_token": issued.token,
            "token_type": BEARER,
            "expires_in": settings.access_token_ttl_seconds,
            "scope": format_scopes(scopes),
        },
        headers=NO_STORE,
    )


def _grants(settings: Settings) -> str:
    return (
        "client_credentials, password" if settings.password_grant_enabled else "client_credentials"
    )


REVOKE_FORM_SCHEMA = _form_schema(
    "token",
    {"token": {"minLength": 1}, "token_type_hint": {"enum": ["access_token"]}, **_CLIENT},
)


async def _revoke(request: Request, settings: Settings) -> Response:
    store, keys, verifier = _state(request)
    ip = request.client.host if request.client else None
    form = await _read_form(request)
    credentials = _client_credentials(request, form)
    if credentials is None:
        raise _invalid_client(used_basic=False)
    client = await _authenticate_client(request, credentials, ip)
    token = form.get("token")
    if token is None:
        raise OAuthError("invalid_request", "token is required.")
    hint = form.get("token_type_hint")
    if hint not in (None, "access_token"):
        raise OAuthError("unsupported_token_type", "Only access tokens can be revoked here.")
    try:
        claims = decode_access_token(
            keys, token, issuer=settings.jwt_issuer, audience=settings.jwt_audience
        )
    except InvalidTokenError:
        # RFC 7009 §2.2: an invalid or expired token needs no revocation.
        return Response(status_code=200, headers=NO_STORE)
    if claims.client_id != client.client_id:
        raise OAuthError("unauthorized_client", "This token was not issued to this client.")
    expires_at = datetime.fromtimestamp(claims.expires_at, UTC)
    await run_in_threadpool(
        lambda: store.revocations.revoke(claims.jti, expires_at, actor=f"client:{client.client_id}")
    )
    verifier.revoke_locally(claims.jti, expires_at)
    return Response(status_code=200, headers=NO_STORE)


def build_router(limiter: QuotaLimiter, settings: Settings) -> APIRouter:
    """/token and /revoke, each limited per client address (every attempt counts)."""
    router = APIRouter(tags=["oauth"])
    per_address = limiter.limit(settings.rate_limit_token, key_func=client_ip)

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
    @per_address
    async def token(request: Request, settings: SettingsDep) -> Response:
        try:
            return await _issue(request, settings)
        except OAuthError as exc:
            request.state.auth_failure = exc.error
            return exc.response()

    @router.post(
        "/revoke",
        summary="Revoke an access token (RFC 7009)",
        openapi_extra=REVOKE_FORM_SCHEMA,
        response_class=Response,
        responses={
            200: {"description": "Revoked, or unknown (RFC 7009 §2.2)."},
            **_oauth_errors(400, 401, 429),
            **problems(408, 413),
        },
    )
    @per_address
    async def revoke(request: Request, settings: SettingsDep) -> Response:
        try:
            return await _revoke(request, settings)
        except OAuthError as exc:
            request.state.auth_failure = exc.error
            return exc.response()

    return router
