"""The credential store: accounts, clients, users, API keys, revoked tokens and the audit trail.

Synchronous SQLAlchemy; the HTTP layer calls these methods in a threadpool. Callers
get small frozen records, never ORM rows, and never a hash: a record can be printed
or logged as it is. Secrets are shown once by the ``create`` methods and only their
HMAC (machine secrets) or argon2 hash (passwords) is kept.

One repository per aggregate (``store.accounts``, ``store.clients``, ``store.users``,
``store.api_keys``, ``store.revocations``, ``store.audit``), all over one ``StoreContext``.
Every client, user and key belongs to one account (``auth.store.accounts``). To add one:
subclass ``auth.store.context.Repository`` in its own module and build it in
``CredentialStore.__init__`` (and in ``is_subject_active`` if it can own tokens).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Engine, text

from auth.errors import StoreUnavailable
from auth.passwords import PasswordHasher, default_hasher
from auth.principal import PrincipalKind
from auth.store.accounts import DEFAULT_PLAN, AccountRepository
from auth.store.api_keys import DEFAULT_ROTATION_GRACE, LAST_USED_RESOLUTION, ApiKeyRepository
from auth.store.audit import AuditLog
from auth.store.clients import ClientRepository
from auth.store.context import GuardedSessions, Repository, StoreContext
from auth.store.health import StoreHealth
from auth.store.records import (
    MAX_JTI_LENGTH,
    MAX_LABEL_LENGTH,
    MAX_NAME_LENGTH,
    MAX_SECRET_LENGTH,
    MAX_USERNAME_LENGTH,
    REDACTED,
    AccountRecord,
    ApiKeyRecord,
    AuditRecord,
    ClientRecord,
    RevokedTokenRecord,
    ScopesArg,
    UserRecord,
    _aware,
)
from auth.store.revocations import RevocationRepository
from auth.store.users import LockoutPolicy, UserRepository
from db.engine import make_session_factory

__all__ = [
    "DEFAULT_PLAN",
    "DEFAULT_ROTATION_GRACE",
    "LAST_USED_RESOLUTION",
    "MAX_JTI_LENGTH",
    "MAX_LABEL_LENGTH",
    "MAX_NAME_LENGTH",
    "MAX_SECRET_LENGTH",
    "MAX_USERNAME_LENGTH",
    "REDACTED",
    "AccountRecord",
    "AccountRepository",
    "ApiKeyRecord",
    "ApiKeyRepository",
    "AuditLog",
    "AuditRecord",
    "ClientRecord",
    "ClientRepository",
    "CredentialStore",
    "LockoutPolicy",
    "Repository",
    "RevocationRepository",
    "RevokedTokenRecord",
    "ScopesArg",
    "StoreContext",
    "StoreHealth",
    "UserRecord",
    "UserRepository",
]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class CredentialStore:
    """Every read and write of credentials, with an audit row for each change and failure.

    ``engine`` must already be at the newest schema (``migrations.upgrade_schema``); the
    store does not own it, so the caller disposes of it. ``pepper`` is the HMAC key from
    ``auth.secrets.load_or_create_pepper``.
    """

    def __init__(
        self,
        engine: Engine,
        pepper: bytes,
        *,
        hasher: PasswordHasher | None = None,
        lockout: LockoutPolicy | None = None,
        clock: Callable[[], datetime] = _utcnow,
        health: StoreHealth | None = None,
    ) -> None:
        self.health = health if health is not None else StoreHealth()
        context = StoreContext(  # refuses a short pepper before anything is built
            sessions=GuardedSessions(make_session_factory(engine), self.health),
            pepper=pepper,
            hasher=hasher if hasher is not None else default_hasher(),
            clock=clock,
        )
        self._context = context
        self.audit = AuditLog(context)
        self.accounts = AccountRepository(context, self.audit)
        self.clients = ClientRepository(context, self.audit)
        self.users = UserRepository(context, self.audit, lockout or LockoutPolicy())
        self.api_keys = ApiKeyRepository(context, self.audit)
        self.revocations = RevocationRepository(context, self.audit)

    def ping(self) -> bool:
        """Whether the database answers now (``/readyz``, and the watcher that probes
        while the store is known down: it tries even then, and its answer is the one
        that marks the store up again)."""
        try:
            with self.health.guard(probe=True), self._context.sessions.factory() as session:
                session.execute(text("SELECT 1"))
        except StoreUnavailable:
            return False
        return True

    def is_subject_active(
        self, kind: PrincipalKind, subject: str, now: datetime | None = None
    ) -> bool:
        """Whether a token's subject may still act: it exists and is not disabled (or, for
        a key, revoked, expired or past its grace), and neither is its account. A lockout
        does not end issued tokens."""
        return self.subject_account(kind, subject, now) is not None

    def subject_account(
        self, kind: PrincipalKind, subject: str, now: datetime | None = None
    ) -> AccountRecord | None:
        """The account of a subject that may still act (see ``is_subject_active``), read
        in one query; None if the subject or its account may not."""
        now = _aware(now, self._context.clock)
        if kind == "client":
            return self.clients.active_account(subject)
        if kind == "user":
            return self.users.active_account(subject)
        if kind == "api_key":
            return self.api_keys.active_account(subject, now)
        return None
