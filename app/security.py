"""Who is calling, with what scopes: the one authenticator behind ``app.deps``' aliases.

Every credential a request presents must be valid: a bad
``Authorization`` header is refused even beside a valid ``X-API-Key``, and the
reverse. When both are valid the bearer token's principal is used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.openapi.models import OAuthFlowClientCredentials, OAuthFlowPassword, OAuthFlows
from fastapi.security import APIKeyHeader, OAuth2, SecurityScopes

from app.errors import ApiError, TooManyRequests
from app.limits import client_ip
from app.single_flight import SingleFlight
from app.state import Services, services
from auth import scopes as S
from auth.principal import Principal
from auth.secrets import parse_api_key
from auth.verifier import CredentialRejected, StoreNeeded
from monitoring.tracing import traced

REALM = "housing-api"

oauth2_scheme = OAuth2(
    flows=OAuthFlows(
        clientCredentials=OAuthFlowClientCredentials(
            tokenUrl="/token", scopes=S.SCOPE_DESCRIPTIONS
        ),
        password=OAuthFlowPassword(tokenUrl="/token", scopes=S.SCOPE_DESCRIPTIONS),
    ),
    scheme_name="OAuth2",
    description="Bearer access token from POST /token (client credentials; password when enabled).",
    auto_error=False,
)
api_key_scheme = APIKeyHeader(
    name="X-API-Key",
    scheme_name="APIKey",
    description="Partner API key, `hpa_<key_id>_<secret>`.",
    auto_error=False,
)


class Unauthenticated(ApiError):
    status, slug, title = 401, "unauthenticated", "Unauthorized"

    def __init__(self, detail: str, *, token_sent: bool) -> None:
        challenge = f'Bearer realm="{REALM}"'
        if token_sent:
            challenge += ', error="invalid_token", error_description="The credential is invalid"'
        super().__init__(detail, headers={"WWW-Authenticate": challenge})


class InsufficientScope(ApiError):
    status, slug, title = 403, "insufficient-scope", "Forbidden"

    def __init__(self, needed: frozenset[str]) -> None:
        wanted = S.format_scopes(needed)
        super().__init__(
            f"This operation needs one of these scopes: {wanted}.",
            headers={
                "WWW-Authenticate": (
                    f'Bearer realm="{REALM}", error="insufficient_scope", scope="{wanted}"'
                )
            },
        )


async def _verified(
    flights: SingleFlight, verify: Callable[..., Principal], credential: str, **options: Any
) -> Principal:
    """``verify`` from its caches on the event loop, or in a thread if it must read the store."""
    try:
        return verify(credential, cached_only=True, **options)
    except StoreNeeded:
        key = f"{verify.__name__}:{credential}"
        return await flights.run(key, partial(verify, credential, **options))


def _bearer_token(authorization: str) -> str:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise CredentialRejected("not_bearer")
    return token.strip()


@dataclass(frozen=True, slots=True)
class Presented:
    """The credential headers of a request (each may have been sent more than once)."""

    authorization: tuple[str, ...] = ()
    api_key: tuple[str, ...] = ()

    @classmethod
    def from_request(cls, request: Request) -> Presented:
        headers = request.headers
        return cls(tuple(headers.getlist("authorization")), tuple(headers.getlist("x-api-key")))


@traced("authenticate")
async def identify(
    built: Services, presented: Presented, ip: str, state: dict[str, Any]
) -> Principal:
    """The caller, or ``Unauthenticated`` / ``TooManyRequests``; the refusal's reason goes
    to ``state["auth_failure"]`` for the metrics and the log.

    Shared by the guard layer (before the body is read) and the ``authenticate``
    dependency. Runs on the event loop: verification is CPU work against per-worker
    caches, and only the occasional cache refresh (a database read) or a Redis-backed
    throttle moves to a worker thread. Each thread hand-off costs more than the check.
    """
    # Empty header values count as absent, as FastAPI's security schemes read them.
    authorization = next((v for v in presented.authorization if v), None)
    api_key = next((v for v in presented.api_key if v), None)
    throttle, flights, verifier = built.auth_throttle, built.credential_reads, built.verifier
    if api_key is not None or authorization is not None:
        # Failed authentications count against the address, never against the key
        # or client they named, so nobody can lock a partner out by guessing.
        refusal = await throttle.refusal_async(ip)
        if refusal is not None:
            state["auth_failure"] = "throttled"
            raise TooManyRequests(
                "Too many failed authentications from this address; retry later.",
                headers=refusal,
            )
    principal: Principal | None = None
    try:
        if len(presented.authorization) > 1 or len(presented.api_key) > 1:
            # A credential header sent twice: the second could hide behind a valid first.
            raise CredentialRejected("repeated_header")
        if api_key is not None:
            principal = await _verified(flights, verifier.verify_api_key, api_key, ip=ip)
        if authorization is not None:
            token = _bearer_token(authorization)
            if parse_api_key(token) is not None:  # a key sent as a bearer credential
                principal = await _verified(flights, verifier.verify_api_key, token, ip=ip)
            else:
                principal = await _verified(flights, verifier.verify_bearer, token)
    except CredentialRejected as exc:
        state["auth_failure"] = exc.reason
        await throttle.failed_async(ip)
        kind = "API key" if principal is None and api_key is not None else "access token"
        raise Unauthenticated(
            f"The {kind} is invalid, expired or revoked.", token_sent=True
        ) from None
    if principal is None:
        state["auth_failure"] = "missing"
        raise Unauthenticated(
            "Authenticate with 'Authorization: Bearer <token>' or 'X-API-Key'.", token_sent=False
        )
    state["principal"] = principal
    return principal


def require_scopes(principal: Principal, needed: frozenset[str], state: dict[str, Any]) -> None:
    """Any one of ``needed`` suffices; ``InsufficientScope`` otherwise."""
    if needed and not needed & principal.scopes:
        state["auth_failure"] = "insufficient_scope"
        raise InsufficientScope(needed)


async def authenticate(
    security_scopes: SecurityScopes,
    request: Request,
    authorization: Annotated[str | None, Depends(oauth2_scheme)],
    api_key: Annotated[str | None, Depends(api_key_scheme)],
) -> Principal:
    """Resolve the caller and check the operation's scopes, as a FastAPI dependency.

    On routes behind the guard layer (``app.guard``) the caller was identified before
    the body was read: its principal is reused. The header parameters are there for
    the OpenAPI document (the security schemes), which is also why this stays the one
    dependency every protected route declares.
    """
    state = request.scope.setdefault("state", {})
    principal: Principal | None = state.get("principal")
    if principal is None:
        principal = await identify(
            services(request), Presented.from_request(request), client_ip(request), state
        )
    require_scopes(principal, frozenset(security_scopes.scopes), state)
    return principal
