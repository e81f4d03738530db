"""The OAuth 2.0 rules: who gets an access token (RFC 6749) and who may revoke one (RFC 7009).

No web framework here: the HTTP route reads the form and shapes the answer, while every
decision (client authentication, grant dispatch, scope granting, throttling, the audit
of issuance) is made here, so it can be tested and reused without a request.
Refusals are ``OAuthError`` (RFC 6749 §5.2), because OAuth client libraries parse
exactly that shape; the route turns one into its JSON answer.

Throttling (SECURITY.md, "/token"): nobody can lock another caller out.

* Every refused attempt counts against the caller's address (``failures``, limit
  RATE_LIMIT_TOKEN); an address past it gets ``429 slow_down`` for every attempt, even
  with correct credentials, until the window lets old failures go.
* A failed client authentication, or a wrong password, also counts against the
  (address, client id) or (address, username) pair (``pair_failures``, half that limit);
  a pair past it is refused before its secret is checked. So a misconfigured client
  behind a NAT stops itself before it can throttle its neighbours, and failures in a
  client's name from other addresses never refuse its correct secret from its own.
* Issuance is limited per client (per user for the password grant), whatever the
  address (``issuance``, RATE_LIMIT_TOKEN_ISSUANCE), and only once authenticated: nobody
  can spend another client's budget, and clients behind one NAT are not counted together.
* A user's own protection is the store's lockout (``auth.store.users.LockoutPolicy``),
  unchanged: nothing else counts failures by username alone.

The store is synchronous: its calls run in a worker thread (anyio's, the pool Starlette
uses too), so a database read or an argon2 check never blocks the event loop.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, TypeVar
from urllib.parse import unquote_plus

from anyio import to_thread

from auth.errors import PasswordCheckBusy, StoreUnavailable
from auth.jwt_keys import SigningKeys
from auth.scopes import ALL_SCOPES, UnknownScopeError, format_scopes, parse_scopes
from auth.store import ClientRecord, CredentialStore
from auth.tokens import InvalidTokenError, decode_access_token, issue_access_token
from auth.verifier import CredentialVerifier

FIRST_PARTY_CLIENT = "first-party"
BEARER = "bearer"  # RFC 6749 §7.1 token type
MAX_THROTTLE_NAME = 200  # characters of a client id or username used as a throttle key
NO_ADDRESS = "unknown"
T = TypeVar("T")
# The form, or how to read it: read only once the address is known not to be throttled,
# so that a form which cannot be read counts as a failed attempt too.
Form = Mapping[str, str] | Callable[[], Awaitable[Mapping[str, str]]]
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


class Budget(Protocol):
    """Successes counted per name across workers (``app.limits.IssuanceBudget``)."""

    async def spend_async(self, name: str) -> tuple[bool, dict[str, str]]:
        """Spend one unit of ``name``'s budget: whether there was room, and the quota
        headers to answer with (``Retry-After`` too when there was none)."""


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


async def _read(form: Form) -> Mapping[str, str]:
    return await form() if callable(form) else form


def granted_scopes(requested: str | None, allowed: frozenset[str]) -> frozenset[str]:
    """RFC 6749 §3.3: a subset of what the caller holds; all of it when none is asked."""
    try:
        wanted = parse_scopes(requested) if requested is not None else allowed
    except UnknownScopeError:
        raise OAuthError(
            "invalid_scope", f"Scopes are space-separated, from: {format_scopes(ALL_SCOPES)}."
        ) from None
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
    headers: Mapping[str, str]  # the issuance budget's quota fields


@dataclass(frozen=True, slots=True)
class _Grantee:
    subject: str
    client_id: str
    kind: str
    plan: str
    scopes: frozenset[str]
    account: str


@dataclass(frozen=True)
class OAuthServer:
    """The token and revocation endpoints' decisions, over parts built once at start-up.

    ``failures`` counts refused attempts per address, ``pair_failures`` failed
    authentications per (address, client or username), ``issuance`` tokens issued and
    revocations per client or user (the module's docstring has the policy).
    """

    store: CredentialStore
    keys: SigningKeys
    verifier: CredentialVerifier
    failures: Throttle
    pair_failures: Throttle
    issuance: Budget
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

    async def issue(self, form: Form, authorization: str | None, ip: str | None) -> TokenGrant:
        """RFC 6749 §4.4 and §4.3: a token for a client, or for a user when enabled."""
        return await self._counting_failures(ip, lambda: self._issue(form, authorization, ip))

    async def revoke(self, form: Form, authorization: str | None, ip: str | None) -> None:
        """RFC 7009: a client revokes its own access token. An invalid or expired token
        needs no revocation (§2.2), so it returns as if revoked."""
        await self._counting_failures(ip, lambda: self._revoke(form, authorization, ip))

    async def _counting_failures(self, ip: str | None, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt()``, unless the address is throttled; each refusal counts against it."""
        address = f"ip:{ip or NO_ADDRESS}"
        await self._unless_throttled(self.failures, address)
        try:
            with _store_needed():
                return await attempt()
        except OAuthError as error:
            if error.status not in (429, 503):  # not a failure of the caller's
                await self.failures.failed_async(address)
            raise

    async def _issue(self, form: Form, authorization: str | None, ip: str | None) -> TokenGrant:
        form = await _read(form)
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

        actor = f"{grantee.kind}:{grantee.subject}"
        headers = await self._spend(actor)
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
            account=grantee.account,
        )
        await to_thread.run_sync(
            lambda: self.store.audit.record(
                "token.issued",
                actor,
                issued.jti,
                {"scope": issued.scope, "account": grantee.account},
                ip=ip,
            )
        )
        return TokenGrant(issued.token, self.ttl_seconds, format_scopes(grantee.scopes), headers)

    async def _spend(self, name: str) -> dict[str, str]:
        """One unit of ``name``'s issuance budget, or ``429 slow_down``."""
        allowed, headers = await self.issuance.spend_async(name)
        if not allowed:
            raise OAuthError(
                "slow_down",
                "Too many tokens for this client; retry later.",
                status=429,
                headers=headers,
            )
        return headers

    async def _revoke(self, form: Form, authorization: str | None, ip: str | None) -> None:
        form = await _read(form)
        credentials = client_credentials(authorization, form)
        if credentials is None:
            raise _invalid_client(used_basic=False)
        client = await self._authenticate_client(credentials, ip)
        await self._spend(f"revoke:client:{client.client_id}")
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
        return _Grantee(
            client.client_id, client.client_id, "client", client.plan, scopes, client.account
        )

    async def _password_grant(
        self, form: Mapping[str, str], credentials: ClientCredentials | None, ip: str | None
    ) -> _Grantee:
        client_id = FIRST_PARTY_CLIENT
        if credentials is not None:  # optional for the password grant, but checked if sent
            client_id = (await self._authenticate_client(credentials, ip)).client_id
        username, password = form.get("username"), form.get("password")
        if username is None or password is None:
            raise OAuthError("invalid_request", "username and password are required.")
        pair = f"ip:{ip or NO_ADDRESS}|user:{username[:MAX_THROTTLE_NAME]}"
        await self._unless_throttled(self.pair_failures, pair)
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
            await self.pair_failures.failed_async(pair)
            raise OAuthError("invalid_grant", "The username or password is incorrect.")
        scopes = granted_scopes(form.get("scope"), user.scopes)
        return _Grantee(user.username, client_id, "user", user.plan, scopes, user.account)

    async def _authenticate_client(
        self, credentials: ClientCredentials, ip: str | None
    ) -> ClientRecord:
        pair = f"ip:{ip or NO_ADDRESS}|client:{credentials.client_id[:MAX_THROTTLE_NAME]}"
        await self._unless_throttled(self.pair_failures, pair)
        client = await to_thread.run_sync(
            lambda: self.store.clients.authenticate(
                credentials.client_id, credentials.secret, ip=ip
            )
        )
        if client is None:
            await self.pair_failures.failed_async(pair)
            raise _invalid_client(credentials.used_basic)
        return client

    async def _unless_throttled(self, throttle: Throttle, name: str) -> None:
        """429 once ``name`` has failed too often, whatever this attempt's credentials."""
        headers = await throttle.refusal_async(name)
        if headers is not None:
            raise OAuthError(
                "slow_down", "Too many failed attempts; retry later.", status=429, headers=headers
            )
