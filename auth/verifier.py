"""Turn a presented credential into a Principal, with revocation seen within seconds.

Every worker keeps three small caches, each at most ``refresh_seconds`` old:
revoked token ids (refreshed incrementally from the store), whether a token's
subject and its account are still enabled (and which account and plan that is),
and recently verified API keys. So a revoked token or key, or a disabled client,
user or account, is refused by every worker within
``refresh_seconds`` (default 2 s, under the contract's 5 s), and the steady-state
cost per request is a JWT signature check plus dictionary lookups: the database
is read at most once per ``refresh_seconds`` per worker for revocations, and once
per subject or key per ``refresh_seconds``.

When the store cannot be reached (``auth.store.health``), a cached answer older than
``refresh_seconds`` still stands for at most ``outage_grace_seconds`` more (0: none,
fail closed): credentials this worker verified shortly before keep working, with every
revocation and refusal it had seen still enforced. Anything it cannot answer from
those caches raises ``StoreUnavailable`` ("try again"), never ``CredentialRejected``.
While the store is known down this is decided from the caches alone, at once, even
with ``cached_only``: no thread, no database call.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from auth.errors import StoreUnavailable
from auth.jwt_keys import SigningKeys
from auth.principal import Principal, PrincipalKind
from auth.store import CredentialStore
from auth.tokens import (
    DEFAULT_LEEWAY_SECONDS,
    AccessTokenClaims,
    InvalidTokenError,
    decode_access_token,
)

# Overlap successive incremental reads: a slow transaction may commit a
# revocation stamped slightly before the previous read.
_REVOCATION_OVERLAP = timedelta(seconds=10)
_MAX_CACHED_KEYS = 10_000


class StoreNeeded(Exception):
    """Raised instead of reading the store when the caller asked for cached answers only.

    Lets an async caller verify on the event loop in the common case and move to a
    thread only for the occasional database read.
    """


class CredentialRejected(Exception):
    """The credential does not authenticate; ``reason`` is for logs and metrics only."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class _CachedKey:
    principal: Principal
    read_at: float  # monotonic
    ends_at: float | None  # monotonic time of the key's own end (expiry, rotation grace)

    def fresh(self, now: float, refresh_seconds: float) -> bool:
        return now < self.read_at + refresh_seconds and (self.ends_at is None or now < self.ends_at)


@dataclass
class CredentialVerifier:
    store: CredentialStore
    keys: SigningKeys
    issuer: str
    audience: str
    refresh_seconds: float = 2.0
    outage_grace_seconds: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _revoked: dict[str, datetime] = field(default_factory=dict, init=False)
    _revoked_read_at: float | None = field(default=None, init=False)
    _revoked_since: datetime | None = field(default=None, init=False)
    # Values are ((account, account plan) or None when refused, monotonic time read).
    _subjects: dict[tuple[PrincipalKind, str], tuple[tuple[str, str] | None, float]] = field(
        default_factory=dict, init=False
    )
    _api_keys: dict[bytes, _CachedKey] = field(default_factory=dict, init=False)
    _tokens: dict[bytes, AccessTokenClaims] = field(default_factory=dict, init=False)
    wall_clock: Callable[[], float] = time.time

    def verify_bearer(self, token: str, *, cached_only: bool = False) -> Principal:
        claims = self._verified_claims(token)
        if self._is_revoked(claims.jti, cached_only):
            raise CredentialRejected("revoked")
        account = self._subject_account(claims.kind, claims.subject, cached_only)
        if account is None:
            raise CredentialRejected("subject_disabled")
        name, plan = account
        if claims.account is not None and claims.account != name:
            raise CredentialRejected("wrong_account")
        return Principal(
            kind=claims.kind,
            subject=claims.subject,
            scopes=claims.scopes,
            plan=claims.plan,
            token_id=claims.jti,
            account=name,
            account_plan=plan,
        )

    def _verified_claims(self, token: str) -> AccessTokenClaims:
        """The token's claims, its signature checked once per worker and its expiry always.

        Keyed by a digest of the whole token, so a token differing in any byte is
        verified afresh; revocation and the subject are checked by the caller on every
        use. A token is cached only once valid (``nbf``/``iat`` passed), and time only
        moves on, so its expiry is the one check left to repeat.
        """
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        cached = self._tokens.get(digest)
        if cached is not None:
            if self.wall_clock() < cached.expires_at + DEFAULT_LEEWAY_SECONDS:
                return cached
            del self._tokens[digest]
            raise CredentialRejected("expired")
        try:
            claims = decode_access_token(
                self.keys, token, issuer=self.issuer, audience=self.audience
            )
        except InvalidTokenError as exc:
            raise CredentialRejected(exc.reason) from None
        if len(self._tokens) >= _MAX_CACHED_KEYS:
            self._tokens.clear()
        self._tokens[digest] = claims
        return claims

    def verify_api_key(
        self, api_key: str, *, ip: str | None = None, cached_only: bool = False
    ) -> Principal:
        # Cache by a digest, so the map never holds usable secrets.
        digest = hashlib.sha256(api_key.encode("utf-8", "surrogatepass")).digest()
        now = self.clock()
        cached = self._api_keys.get(digest)
        if cached is not None and cached.fresh(now, self.refresh_seconds):
            return cached.principal
        if self.store.health.refusing():
            return self._key_in_outage(cached, now)
        if cached_only:
            raise StoreNeeded
        try:
            record = self.store.api_keys.authenticate(api_key, ip=ip)
        except StoreUnavailable:
            return self._key_in_outage(cached, now)
        if record is None:
            self._api_keys.pop(digest, None)
            raise CredentialRejected("invalid_api_key")
        principal = record.principal()
        # Never trust the cache past the key's own end (expiry, or rotation grace).
        ends_at = None
        if record.ends_at is not None:
            ends_at = now + (record.ends_at - datetime.now(UTC)).total_seconds()
        if len(self._api_keys) >= _MAX_CACHED_KEYS:
            self._api_keys.clear()
        self._api_keys[digest] = _CachedKey(principal, now, ends_at)
        return principal

    def _key_in_outage(self, cached: _CachedKey | None, now: float) -> Principal:
        """The key as last verified, within the grace; its own end still holds."""
        if cached is not None and cached.ends_at is not None and now >= cached.ends_at:
            raise CredentialRejected("expired")
        if cached is None or not self._within_grace(cached.read_at, now):
            raise StoreUnavailable(self.store.health.retry_after)
        return cached.principal

    def _within_grace(self, read_at: float | None, now: float) -> bool:
        """Whether an answer read at ``read_at`` may still stand while the store is down."""
        if read_at is None or self.outage_grace_seconds <= 0:
            return False
        return now - read_at < self.refresh_seconds + self.outage_grace_seconds

    def _refresh_or_keep(
        self, read_at: float | None, now: float, cached_only: bool, read: Callable[[], None]
    ) -> None:
        """Refresh a stale cached answer with ``read``, or, while the store cannot be
        reached, keep it if it is within the grace. ``StoreNeeded`` when the store must
        be read and ``cached_only``; ``StoreUnavailable`` when it cannot be."""
        health = self.store.health
        if not health.refusing():
            if cached_only:
                raise StoreNeeded
            try:
                read()
                return
            except StoreUnavailable:
                if not self._within_grace(read_at, now):
                    raise
                return
        if not self._within_grace(read_at, now):
            raise StoreUnavailable(health.retry_after)

    def revoke_locally(self, jti: str, expires_at: datetime) -> None:
        """Refuse a token in this worker at once (the store tells the others)."""
        with self._lock:
            self._revoked[jti] = expires_at

    def _is_revoked(self, jti: str, cached_only: bool) -> bool:
        now = self.clock()
        read_at = self._revoked_read_at
        if read_at is None or now - read_at >= self.refresh_seconds:
            self._refresh_or_keep(read_at, now, cached_only, lambda: self._refresh_revocations(now))
        return jti in self._revoked

    def _refresh_revocations(self, now: float) -> None:
        with self._lock:
            if (
                self._revoked_read_at is not None
                and now - self._revoked_read_at < self.refresh_seconds
            ):
                return  # another thread refreshed while we waited
            wall = datetime.now(UTC)
            since = (
                None if self._revoked_since is None else self._revoked_since - _REVOCATION_OVERLAP
            )
            for record in self.store.revocations.since(since):
                self._revoked[record.jti] = record.expires_at
            for jti in [j for j, expires in self._revoked.items() if expires <= wall]:
                del self._revoked[jti]
            self._revoked_since = wall
            self._revoked_read_at = now

    def _subject_account(
        self, kind: PrincipalKind, subject: str, cached_only: bool
    ) -> tuple[str, str] | None:
        """``(account, account plan)`` while the subject and its account may act, else None."""
        now = self.clock()
        cached = self._subjects.get((kind, subject))
        if cached is not None and now - cached[1] < self.refresh_seconds:
            return cached[0]

        answer: list[tuple[str, str] | None] = []

        def read() -> None:
            record = self.store.subject_account(kind, subject)
            account = (record.name, record.plan) if record is not None else None
            if len(self._subjects) >= _MAX_CACHED_KEYS:
                self._subjects.clear()
            self._subjects[(kind, subject)] = (account, now)
            answer.append(account)

        self._refresh_or_keep(None if cached is None else cached[1], now, cached_only, read)
        # Not read: the store is down and the cached answer stands (within the grace).
        if answer:
            return answer[0]
        return cached[0] if cached is not None else None
