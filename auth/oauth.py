"""The OAuth 2.0 rules: who gets an access token (RFC 6749) and who may revoke one (RFC 7009).

No web framework here: the HTTP route reads the form and shapes the answer, while every
decision (client authentication, grant dispatch, scope granting, failure throttling, the
audit of issuance) is made here, so it can be tested and reused without a request.
Refusals are ``OAuthError`` (RFC 6749 §5.2), because OAuth client libraries parse
exactly that shape; the route turns one into its JSON answer.

The store is synchronous: its calls run in a worker thread (anyio's, the pool Starlette
uses too), so a database read or an argon2 check never blocks the event loop.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol
from urllib.parse import unquote_plus

from anyio import to_thread

from auth.errors import PasswordCheckBusy, StoreUnavailable
from auth.jwt_keys import SigningKeys
from auth.scopes import UnknownScopeError, format_scopes, parse_scopes
from auth.store import ClientRecord, CredentialStore
from auth.tokens import InvalidTokenError, decode_access_token, issue_access_token
from auth.verifier import CredentialVerifier

FIRST_PARTY_CLIENT = "first-party"
BEARER = "bearer"  # RFC 6749 §7.1 token type
MAX_THROTTLE_NAME = 200  # characters of a client id or username used as a throttle key
# Every parameter the endpoints read; anything else is ignored (RFC 6749 §3.1).
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
    """An RFC 6749 §5.2 refusal. It carries its HTTP status and headers (a challenge,
    ``Retry-After``) because the rule that refuses knows them; the route only renders it."""

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


class Throttle(Protocol):
    """Failures counted per name across workers. A protocol, so auth needs nothing from
    app: ``app.limits.FailureThrottle`` is one."""

    async def refusal_async(self, name: str) -> dict[str, str] | None:
        """429 headers while ``name`` has failed too often, else None."""

    async def failed_async(self, name: str) -> None:
        """Count one failure of ``name``."""


@contextmanager
def _store_needed() -> Iterator[None]:
    """RFC 6749 §5.2 ``temporarily_unavailable`` (503, ``Retry-After``) while the store
    cannot be reached: no verdict on the credentials, which could not be checked."""
    try:
        yield
    except StoreUnavailable as exc:
        raise OAuthError(
            "temporarily_unavailable",
            "The credential store is unavailable; retry shortly.",
            status=503,
            headers={"Retry-After": str(exc.retry_after)},
        ) from None


def _invalid_client(used_basic: bool) -> OAuthError:
    """RFC 6749 §5.2: 401 with a challenge in the scheme the client tried."""
    scheme = "Basic" if used_basic else "Bearer"
    return OAuthError(
        "invalid_client",
        "Client authentication failed.",
        status=401,
        headers={"WWW-Authenticate": f'{scheme} realm="housing-api"'},
    )


@dataclass(frozen=True)
class ClientCredentials:
    client_id: str
    secret: str
    used_basic: bool


def client_credentials(
    authorization: str | None, form: Mapping[str, str]
) -> ClientCredentials | None:
    """RFC 6749 §2.3.1: HTTP Basic (form-urlencoded parts) or both in the form, not both.

    ``authorization`` is the ``Authorization`` header as received (None when absent).
    """
    in_form = "client_secret" in form
    if authorization is not None:
        scheme, _, encoded = authorization.partition(" ")
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


def granted_scopes(requested: str | None, allowed: frozenset[str]) -> frozenset[str]:
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


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """A successful token response (RFC 6749 §5.1); the token type is always ``BEARER``."""

    access_token: str
    expires_in: int
    scope: str


@dataclass(frozen=True, slots=True)
class _Grantee:
    subject: str
    client_id: str
    kind: str
    plan: str
    scopes: frozenset[str]


@dataclass(frozen=True)
class OAuthServer:
    """The token and revocation endpoints' decisions, over parts built once at start-up.

    ``throttle`` counts failed client and user authentications by name, so guessing one
    client's secret or one user's password is slowed whatever address it comes from.
    """

    store: CredentialStore
    keys: SigningKeys
    verifier: CredentialVerifier
    throttle: Throttle
    issuer: str
    audience: str
    ttl_seconds: int
    password_grant_enabled: bool

    @property
    def grant_types(self) -> str:
        """The supported grants, as ``unsupported_grant_type`` lists them."""
        if self.password_grant_enabled:
            return "client_credentials, password"
        return "client_credentials"

    async def issue(
        self, form: Mapping[str, str], authorization: str | None, ip: str | None
    ) -> TokenGrant:
        """RFC 6749 §4.4 and §4.3: a token for a client, or for a user when enabled."""
        with _store_needed():
            return await self._issue(form, authorization, ip)

    async def revoke(
        self, form: Mapping[str, str], authorization: str | None, ip: str | None
    ) -> None:
        """RFC 7009: a client revokes its own access token. An invalid or expired token
        needs no revocation (§2.2), so it returns as if revoked."""
        with _store_needed():
            await self._revoke(form, authorization, ip)

    async def _issue(
        self, form: Mapping[str, str], authorization: str | None, ip: str | None
    ) -> TokenGrant:
        credentials = client_credentials(authorization, form)
        grant_type = form.get("grant_type")
        if grant_type is None:
            raise OAuthError("invalid_request", "grant_type is required.")
        if grant_type == "client_credentials":
            grantee = await self._client_grant(form, credentials, ip)
        elif grant_type == "password" and self.password_grant_enabled:
            grantee = await self._password_grant(form, credentials, ip)
        else:
            raise OAuthError("unsupported_grant_type", f"Supported: {self.grant_types}.")

        issued = issue_access_token(
            self.keys,
            subject=grantee.subject,
            client_id=grantee.client_id,
            scopes=grantee.scopes,
            kind=grantee.kind,
            plan=grantee.plan,
            issuer=self.issuer,
            audience=self.audience,
            ttl_seconds=self.ttl_seconds,
        )
        actor = f"{grantee.kind}:{grantee.subject}"
        await to_thread.run_sync(
            lambda: self.store.audit.record(
                "token.issued", actor, issued.jti, {"scope": issued.scope}, ip=ip
            )
        )
        return TokenGrant(issued.token, self.ttl_seconds, format_scopes(grantee.scopes))

    async def _revoke(
        self, form: Mapping[str, str], authorization: str | None, ip: str | None
    ) -> None:
        credentials = client_credentials(authorization, form)
        if credentials is None:
            raise _invalid_client(used_basic=False)
        client = await self._authenticate_client(credentials, ip)
        token = form.get("token")
        if token is None:
            raise OAuthError("invalid_request", "token is required.")
        hint = form.get("token_type_hint")
        if hint not in (None, "access_token"):
            raise OAuthError("unsupported_token_type", "Only access tokens can be revoked here.")
        try:
            claims = decode_access_token(
                self.keys, token, issuer=self.issuer, audience=self.audience
            )
        except InvalidTokenError:
            return
        if claims.client_id != client.client_id:
            raise OAuthError("unauthorized_client", "This token was not issued to this client.")
        expires_at = datetime.fromtimestamp(claims.expires_at, UTC)
        actor = f"client:{client.client_id}"
        await to_thread.run_sync(
            lambda: self.store.revocations.revoke(claims.jti, expires_at, actor=actor)
        )
        self.verifier.revoke_locally(claims.jti, expires_at)

    async def _client_grant(
        self, form: Mapping[str, str], credentials: ClientCredentials | None, ip: str | None
    ) -> _Grantee:
        if credentials is None:
            raise _invalid_client(used_basic=False)
        client = await self._authenticate_client(credentials, ip)
        scopes = granted_scopes(form.get("scope"), client.scopes)
        return _Grantee(client.client_id, client.client_id, "client", client.plan, scopes)

    async def _password_grant(
        self, form: Mapping[str, str], credentials: ClientCredentials | None, ip: str | None
    ) -> _Grantee:
        client_id = FIRST_PARTY_CLIENT
        if credentials is not None:  # optional for the password grant, but checked if sent
            client_id = (await self._authenticate_client(credentials, ip)).client_id
        username, password = form.get("username"), form.get("password")
        if username is None or password is None:
            raise OAuthError("invalid_request", "username and password are required.")
        name = f"user:{username[:MAX_THROTTLE_NAME]}"
        await self._unless_throttled(name)
        try:
            user = await to_thread.run_sync(
                lambda: self.store.users.authenticate(username, password, ip=ip)
            )
        except PasswordCheckBusy:
            raise OAuthError(
                "temporarily_unavailable",
                "Too many logins at once; retry shortly.",
                status=503,
                headers={"Retry-After": "1"},
            ) from None
        if user is None:
            await self.throttle.failed_async(name)
            raise OAuthError("invalid_grant", "The username or password is incorrect.")
        scopes = granted_scopes(form.get("scope"), user.scopes)
        return _Grantee(user.username, client_id, "user", user.plan, scopes)

    async def _authenticate_client(
        self, credentials: ClientCredentials, ip: str | None
    ) -> ClientRecord:
        name = f"client:{credentials.client_id[:MAX_THROTTLE_NAME]}"
        await self._unless_throttled(name)
        client = await to_thread.run_sync(
            lambda: self.store.clients.authenticate(
                credentials.client_id, credentials.secret, ip=ip
            )
        )
        if client is None:
            await self.throttle.failed_async(name)
            raise _invalid_client(credentials.used_basic)
        return client

    async def _unless_throttled(self, name: str) -> None:
        """429 once ``name`` has failed too often, whatever this attempt's credentials."""
        headers = await self.throttle.refusal_async(name)
        if headers is not None:
            raise OAuthError(
                "slow_down", "Too many failed attempts; retry later.", status=429, headers=headers
            )
