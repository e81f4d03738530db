"""The credential store: clients, users, API keys, revoked tokens and the audit trail.

Synchronous SQLAlchemy; the HTTP layer calls these methods in a threadpool. Callers
get small frozen records, never ORM rows, and never a hash: a record can be printed
or logged as it is. Secrets are shown once by the ``create_*`` methods and only their
HMAC (machine secrets) or argon2 hash (passwords) is kept.

Write transactions start with their write (INSERT/UPDATE), never with a read, so
SQLite's busy timeout applies to them; slow work (argon2) runs outside transactions.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete, or_, select, text, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from auth.errors import DuplicateError, InvalidValueError
from auth.models import ApiKey, AuditEvent, Client, RevokedToken, User
from auth.passwords import PasswordHasher, check_password_policy, default_hasher
from auth.principal import Principal, PrincipalKind
from auth.scopes import UnknownScopeError, format_scopes, parse_scopes
from auth.secrets import (
    DUMMY_HMAC,
    MIN_PEPPER_BYTES,
    generate_api_key,
    generate_client_id,
    generate_secret,
    hmac_secret,
    is_client_id,
    parse_api_key,
    verify_secret,
)
from db.engine import make_session_factory

ScopesArg = str | Iterable[str]

# last_used_at is bookkeeping, not security: one write per key per minute at most.
LAST_USED_RESOLUTION = timedelta(minutes=1)
DEFAULT_ROTATION_GRACE = timedelta(hours=1)
MAX_SECRET_LENGTH = 256  # longer "secrets" are wrong; hash only a bounded prefix
MAX_USERNAME_LENGTH = 150
MAX_NAME_LENGTH = 100
MAX_LABEL_LENGTH = 200
MAX_JTI_LENGTH = 128
_PLAN_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}", re.ASCII)
# ASCII only: a look-alike Unicode name (fullwidth "a" in "alice") could pass for another.
_USERNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,149}", re.ASCII)
_SENSITIVE_KEY_RE = re.compile(r"secret|password|passwd|hash|hmac|pepper|api_?key|authoriz", re.I)
REDACTED = "[redacted]"


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    """After ``threshold`` failed logins, lock for ``base``, doubling per failure, up to ``cap``.

    Failures are not counted while locked (those attempts never test the password), so
    a flood cannot push a victim's lock beyond what each real guess earns.
    """

    threshold: int = 5
    base: timedelta = timedelta(seconds=30)
    cap: timedelta = timedelta(hours=1)

    def lock_for(self, failures: int) -> timedelta | None:
        if failures < self.threshold:
            return None
        exponent = min(failures - self.threshold, 32)  # 2**32 * base is past any cap
        return min(self.base * (1 << exponent), self.cap)


@dataclass(frozen=True, slots=True)
class ClientRecord:
    client_id: str
    name: str | None
    scopes: frozenset[str]
    plan: str
    disabled: bool
    created_at: datetime

    def principal(self) -> Principal:
        return Principal(kind="client", subject=self.client_id, scopes=self.scopes, plan=self.plan)


@dataclass(frozen=True, slots=True)
class UserRecord:
    username: str
    scopes: frozenset[str]
    plan: str
    disabled: bool
    failed_logins: int
    locked_until: datetime | None
    created_at: datetime

    def principal(self) -> Principal:
        return Principal(kind="user", subject=self.username, scopes=self.scopes, plan=self.plan)


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    key_id: str
    owner: str
    scopes: frozenset[str]
    plan: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    created_by: str | None
    rotated_from: str | None
    grace_until: datetime | None

    def unusable_reason(self, now: datetime) -> str | None:
        """Why the key is refused at ``now`` (``revoked``, ``expired``, ``rotated``), or None."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        if self.grace_until is not None and self.grace_until <= now:
            return "rotated"
        return None

    def principal(self) -> Principal:
        return Principal(kind="api_key", subject=self.key_id, scopes=self.scopes, plan=self.plan)


@dataclass(frozen=True, slots=True)
class RevokedTokenRecord:
    jti: str
    expires_at: datetime
    revoked_at: datetime


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    at: datetime
    event: str
    actor: str | None
    subject: str | None
    detail: dict[str, Any]
    ip: str | None


def _read_scopes(stored: str) -> frozenset[str]:
    """Scopes from the database; a scope we no longer define is dropped (fail closed)."""
    try:
        return parse_scopes(stored)
    except UnknownScopeError as exc:
        return parse_scopes(" ".join(set(stored.split()) - exc.unknown))


def _scopes_text(scopes: ScopesArg) -> str:
    """Validated, canonical space-separated scopes; ``UnknownScopeError`` on a bad name."""
    raw = scopes if isinstance(scopes, str) else " ".join(scopes)
    return format_scopes(parse_scopes(raw))


def _label(value: str, field: str, max_length: int) -> str:
    """A printable name: no control characters (they would forge lines in logs)."""
    cleaned = value.strip()
    if not cleaned:
        raise InvalidValueError(f"{field} must not be empty")
    if len(cleaned) > max_length:
        raise InvalidValueError(f"{field} must have at most {max_length} characters")
    if any(unicodedata.category(char).startswith("C") for char in cleaned):
        raise InvalidValueError(f"{field} must not contain control characters")
    return cleaned


def _username(value: str) -> str:
    if not _USERNAME_RE.fullmatch(value):
        raise InvalidValueError(
            "username must be 1-150 characters of A-Z, a-z, 0-9 and . _ @ + -, "
            "starting with a letter or digit"
        )
    return value


def _plan(value: str) -> str:
    if not _PLAN_RE.fullmatch(value):
        raise InvalidValueError("plan must be 1-32 characters of a-z, 0-9, '_' or '-'")
    return value


def _aware(now: datetime | None, default: Callable[[], datetime]) -> datetime:
    if now is None:
        return default()
    if now.tzinfo is None:
        raise ValueError("naive datetime given to the credential store; use tz=UTC")
    return now.astimezone(UTC)


def _clip(value: str | None, length: int) -> str | None:
    return None if value is None else value[:length]


def _sanitise(detail: Any) -> Any:
    """Audit details as plain JSON with anything secret-looking replaced by ``[redacted]``."""
    if isinstance(detail, dict):
        return {
            str(key): REDACTED if _SENSITIVE_KEY_RE.search(str(key)) else _sanitise(value)
            for key, value in detail.items()
        }
    if isinstance(detail, list | tuple | set | frozenset):
        items = sorted(detail, key=repr) if isinstance(detail, set | frozenset) else detail
        return [_sanitise(item) for item in items]
    if isinstance(detail, str):
        return REDACTED if parse_api_key(detail) is not None else detail
    if detail is None or isinstance(detail, bool | int | float):
        return detail
    if isinstance(detail, datetime):
        return detail.isoformat()
    return str(detail)


def _client_record(row: Client) -> ClientRecord:
    return ClientRecord(
        client_id=row.client_id,
        name=row.name,
        scopes=_read_scopes(row.scopes),
        plan=row.plan,
        disabled=row.disabled,
        created_at=row.created_at,
    )


def _user_record(row: User) -> UserRecord:
    return UserRecord(
        username=row.username,
        scopes=_read_scopes(row.scopes),
        plan=row.plan,
        disabled=row.disabled,
        failed_logins=row.failed_logins,
        locked_until=row.locked_until,
        created_at=row.created_at,
    )


def _api_key_record(row: ApiKey) -> ApiKeyRecord:
    return ApiKeyRecord(
        key_id=row.key_id,
        owner=row.owner,
        scopes=_read_scopes(row.scopes),
        plan=row.plan,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
        created_by=row.created_by,
        rotated_from=row.rotated_from,
        grace_until=row.grace_until,
    )


class CredentialStore:
    """Every read and write of credentials, with an audit row for each change and failure.

    ``engine`` must already be at the newest schema (``auth.db.upgrade_schema``); the
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
    ) -> None:
        if len(pepper) < MIN_PEPPER_BYTES:
            raise ValueError(f"the pepper must have at least {MIN_PEPPER_BYTES} bytes")
        self._pepper = pepper
        self._sessions = make_session_factory(engine)
        self._hasher = hasher if hasher is not None else default_hasher()
        self._lockout = lockout if lockout is not None else LockoutPolicy()
        self._clock = clock
        self._hasher.dummy_hash()  # pay for it now, not on the first unknown username

    # -- health ---------------------------------------------------------------------

    def ping(self) -> bool:
        """Whether the database answers (for ``/readyz``)."""
        try:
            with self._sessions() as session:
                session.execute(text("SELECT 1"))
        except SQLAlchemyError:
            return False
        return True

    # -- clients --------------------------------------------------------------------

    def create_client(
        self,
        name: str | None,
        scopes: ScopesArg,
        plan: str = "default",
        *,
        actor: str | None = None,
    ) -> tuple[str, str]:
        """A new client; returns ``(client_id, client_secret)``; the secret is not kept."""
        name = _label(name, "client name", MAX_NAME_LENGTH) if name is not None else None
        scope_text, plan = _scopes_text(scopes), _plan(plan)
        client_id, secret = generate_client_id(), generate_secret()
        try:
            with self._sessions.begin() as session:
                session.add(
                    Client(
                        client_id=client_id,
                        name=name,
                        secret_hmac=hmac_secret(self._pepper, secret),
                        scopes=scope_text,
                        plan=plan,
                        disabled=False,
                        created_at=self._clock(),
                    )
                )
                session.flush()
                self._add_audit(
                    session,
                    "client.created",
                    actor,
                    client_id,
                    {"name": name, "scopes": scope_text, "plan": plan},
                )
        except IntegrityError:
            raise DuplicateError("client", name or client_id) from None
        return client_id, secret

    def authenticate_client(
        self, client_id: str, secret: str, *, ip: str | None = None
    ) -> ClientRecord | None:
        """The client if the secret matches and it is enabled, else None (one answer for all).

        An unknown id still costs one HMAC comparison, so timing does not tell ids apart.
        """
        row_record: ClientRecord | None = None
        stored = DUMMY_HMAC
        if is_client_id(client_id):
            with self._sessions() as session:
                row = session.get(Client, client_id)
                if row is not None:
                    row_record, stored = _client_record(row), row.secret_hmac
        ok = verify_secret(self._pepper, secret[:MAX_SECRET_LENGTH], stored)
        ok = ok and len(secret) <= MAX_SECRET_LENGTH
        if row_record is not None and ok and not row_record.disabled:
            return row_record
        reason = "unknown_client" if row_record is None else "disabled" if ok else "bad_secret"
        subject = client_id if is_client_id(client_id) else None  # never echo a pasted secret
        self.audit("client.auth_failed", None, subject, {"reason": reason}, ip=ip)
        return None

    def get_client(self, client_id: str) -> ClientRecord | None:
        with self._sessions() as session:
            row = session.get(Client, client_id)
            return _client_record(row) if row is not None else None

    def list_clients(self) -> list[ClientRecord]:
        with self._sessions() as session:
            rows = session.scalars(select(Client).order_by(Client.created_at, Client.client_id))
            return [_client_record(row) for row in rows]

    def disable_client(self, client_id: str, *, actor: str | None = None) -> bool:
        """Disable a client; False if there is no such client. Its tokens stop working too,
        via ``is_subject_active``."""
        return self._disable(Client, Client.client_id, client_id, "client.disabled", actor)

    # -- users ----------------------------------------------------------------------

    def create_user(
        self,
        username: str,
        password: str,
        scopes: ScopesArg,
        plan: str = "default",
        *,
        actor: str | None = None,
    ) -> UserRecord:
        """A new password user; ``PasswordPolicyError`` for a too short or too long password."""
        username = _username(username)
        scope_text, plan = _scopes_text(scopes), _plan(plan)
        check_password_policy(password)
        password_hash = self._hasher.hash(password)  # slow: outside the transaction
        row = User(
            username=username,
            password_hash=password_hash,
            scopes=scope_text,
            plan=plan,
            disabled=False,
            failed_logins=0,
            locked_until=None,
            created_at=self._clock(),
        )
        try:
            with self._sessions.begin() as session:
                session.add(row)
                session.flush()
                self._add_audit(
                    session, "user.created", actor, username, {"scopes": scope_text, "plan": plan}
                )
        except IntegrityError:
            raise DuplicateError("user", username) from None
        return _user_record(row)

    def authenticate_user(
        self, username: str, password: str, now: datetime | None = None, *, ip: str | None = None
    ) -> UserRecord | None:
        """The user if the password matches, else None; the same None for unknown, locked,
        disabled and wrong. Each path runs one argon2 verification, so timing matches.

        Raises ``PasswordCheckBusy`` when too many checks already run (shed load).
        """
        now = _aware(now, self._clock)
        record: UserRecord | None = None
        stored_hash: str | None = None
        # Only a well-formed name can exist; anything else (a NUL byte, which PostgreSQL
        # refuses in text, or a megabyte) is simply unknown, without a database read.
        if _USERNAME_RE.fullmatch(username):
            with self._sessions() as session:
                row = session.get(User, username)
                if row is not None:
                    record, stored_hash = _user_record(row), row.password_hash
        if record is None:
            self._hasher.verify(None, password)
            # An unknown name may be a password typed in the wrong field: do not keep it.
            self.audit("user.auth_failed", None, None, {"reason": "unknown_user"}, ip=ip)
            return None
        if record.locked_until is not None and record.locked_until > now:
            self._hasher.verify(None, password)
            self.audit(
                "user.auth_failed",
                None,
                record.username,
                {"reason": "locked", "locked_until": record.locked_until},
                ip=ip,
            )
            return None
        if record.disabled:
            self._hasher.verify(None, password)
            self.audit("user.auth_failed", None, record.username, {"reason": "disabled"}, ip=ip)
            return None
        ok, new_hash = self._hasher.verify(stored_hash, password)
        if not ok:
            self._count_failed_login(record.username, now, ip)
            return None
        if record.failed_logins or record.locked_until is not None or new_hash is not None:
            values: dict[str, Any] = {"failed_logins": 0, "locked_until": None}
            if new_hash is not None:
                values["password_hash"] = new_hash  # parameters changed: upgrade in place
            with self._sessions.begin() as session:
                session.execute(
                    update(User).where(User.username == record.username).values(**values)
                )
        return replace(record, failed_logins=0, locked_until=None)

    def _count_failed_login(self, username: str, now: datetime, ip: str | None) -> None:
        with self._sessions.begin() as session:
            failures = session.execute(
                update(User)
                .where(User.username == username)
                .values(failed_logins=User.failed_logins + 1)
                .returning(User.failed_logins)
            ).scalar_one_or_none()
            lock = self._lockout.lock_for(failures) if failures is not None else None
            if lock is not None:
                session.execute(
                    update(User).where(User.username == username).values(locked_until=now + lock)
                )
            detail: dict[str, Any] = {"reason": "bad_password", "failures": failures}
            if lock is not None:
                detail["locked_seconds"] = int(lock.total_seconds())
            self._add_audit(session, "user.auth_failed", None, username, detail, ip=ip)

    def get_user(self, username: str) -> UserRecord | None:
        with self._sessions() as session:
            row = session.get(User, username)
            return _user_record(row) if row is not None else None

    def list_users(self) -> list[UserRecord]:
        with self._sessions() as session:
            rows = session.scalars(select(User).order_by(User.created_at, User.username))
            return [_user_record(row) for row in rows]

    def disable_user(self, username: str, *, actor: str | None = None) -> bool:
        """Disable a user; False if there is no such user."""
        return self._disable(User, User.username, username, "user.disabled", actor)

    # -- API keys -------------------------------------------------------------------

    def create_api_key(
        self,
        owner: str,
        scopes: ScopesArg,
        plan: str = "default",
        expires_at: datetime | None = None,
        created_by: str | None = None,
    ) -> tuple[str, str]:
        """A new key; returns ``(key_id, api_key)``. Only the secret's HMAC is kept."""
        owner = _label(owner, "owner", MAX_LABEL_LENGTH)
        scope_text, plan = _scopes_text(scopes), _plan(plan)
        if expires_at is not None:
            expires_at = _aware(expires_at, self._clock)
        key_id, secret, api_key = generate_api_key()
        with self._sessions.begin() as session:
            session.add(
                ApiKey(
                    key_id=key_id,
                    owner=owner,
                    secret_hmac=hmac_secret(self._pepper, secret),
                    scopes=scope_text,
                    plan=plan,
                    created_at=self._clock(),
                    expires_at=expires_at,
                    created_by=_clip(created_by, MAX_LABEL_LENGTH),
                )
            )
            session.flush()
            self._add_audit(
                session,
                "api_key.created",
                created_by,
                key_id,
                {"owner": owner, "scopes": scope_text, "plan": plan, "expires_at": expires_at},
            )
        return key_id, api_key

    def authenticate_api_key(
        self, api_key: str, now: datetime | None = None, *, ip: str | None = None
    ) -> ApiKeyRecord | None:
        """The key's record if it is well-formed, matches, and is neither revoked, expired
        nor past its rotation grace; else None. Refreshes ``last_used_at`` at most once a
        minute per key, so a busy key does not turn every request into a write."""
        now = _aware(now, self._clock)
        parsed = parse_api_key(api_key)
        if parsed is None:
            self.audit("api_key.auth_failed", None, None, {"reason": "malformed"}, ip=ip)
            return None
        key_id, secret = parsed
        record: ApiKeyRecord | None = None
        stored = DUMMY_HMAC
        with self._sessions() as session:
            row = session.get(ApiKey, key_id)
            if row is not None:
                record, stored = _api_key_record(row), row.secret_hmac
        ok = verify_secret(self._pepper, secret, stored)
        if record is None:
            reason: str | None = "unknown_key"
        else:
            reason = "bad_secret" if not ok else record.unusable_reason(now)
        if record is None or reason is not None:
            self.audit("api_key.auth_failed", None, key_id, {"reason": reason}, ip=ip)
            return None
        due = record.last_used_at is None or now - record.last_used_at >= LAST_USED_RESOLUTION
        if due:
            with self._sessions.begin() as session:
                # The condition repeats the check, so concurrent workers write once.
                session.execute(
                    update(ApiKey)
                    .where(
                        ApiKey.key_id == key_id,
                        or_(
                            ApiKey.last_used_at.is_(None),
                            ApiKey.last_used_at <= now - LAST_USED_RESOLUTION,
                        ),
                    )
                    .values(last_used_at=now)
                )
            record = replace(record, last_used_at=now)
        return record

    def get_api_key(self, key_id: str, *, owner: str | None = None) -> ApiKeyRecord | None:
        """The key, or None if missing or (with ``owner``) someone else's: the same answer."""
        with self._sessions() as session:
            row = session.get(ApiKey, key_id)
            if row is None or (owner is not None and row.owner != owner):
                return None
            return _api_key_record(row)

    def list_api_keys(self, owner: str | None = None) -> list[ApiKeyRecord]:
        query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.key_id)
        if owner is not None:
            query = query.where(ApiKey.owner == owner)
        with self._sessions() as session:
            return [_api_key_record(row) for row in session.scalars(query)]

    def revoke_api_key(
        self, key_id: str, actor: str | None = None, *, owner: str | None = None
    ) -> bool:
        """Revoke a key; False if there is none (or, with ``owner``, it is someone else's).
        Revoking a revoked key changes nothing and answers True."""
        conditions = [ApiKey.key_id == key_id]
        if owner is not None:
            conditions.append(ApiKey.owner == owner)
        with self._sessions.begin() as session:
            changed = session.execute(
                update(ApiKey)
                .where(*conditions, ApiKey.revoked_at.is_(None))
                .values(revoked_at=self._clock())
                .returning(ApiKey.owner)
            ).first()
            if changed is None:
                return session.execute(select(ApiKey.key_id).where(*conditions)).first() is not None
            self._add_audit(session, "api_key.revoked", actor, key_id, {"owner": changed.owner})
        return True

    def rotate_api_key(
        self,
        key_id: str,
        *,
        actor: str | None = None,
        owner: str | None = None,
        grace: timedelta = DEFAULT_ROTATION_GRACE,
    ) -> tuple[str, str] | None:
        """A new key with the same owner, scopes, plan and expiry; the old one keeps working
        for ``grace`` (never past its own expiry). None if the old key is missing, someone
        else's, revoked, expired or already rotated. Returns ``(key_id, api_key)``."""
        now = self._clock()
        conditions = [
            ApiKey.key_id == key_id,
            ApiKey.revoked_at.is_(None),
            ApiKey.grace_until.is_(None),
            or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now),
        ]
        if owner is not None:
            conditions.append(ApiKey.owner == owner)
        new_id, secret, api_key = generate_api_key()
        with self._sessions.begin() as session:
            old = session.execute(
                update(ApiKey)
                .where(*conditions)
                .values(grace_until=now + grace)
                .returning(ApiKey.owner, ApiKey.scopes, ApiKey.plan, ApiKey.expires_at)
            ).first()
            if old is None:
                return None
            grace_until = now + grace
            if old.expires_at is not None and old.expires_at < grace_until:
                grace_until = old.expires_at
                session.execute(
                    update(ApiKey).where(ApiKey.key_id == key_id).values(grace_until=grace_until)
                )
            session.add(
                ApiKey(
                    key_id=new_id,
                    owner=old.owner,
                    secret_hmac=hmac_secret(self._pepper, secret),
                    scopes=old.scopes,
                    plan=old.plan,
                    created_at=now,
                    expires_at=old.expires_at,
                    created_by=_clip(actor, MAX_LABEL_LENGTH),
                    rotated_from=key_id,
                )
            )
            session.flush()
            self._add_audit(
                session,
                "api_key.rotated",
                actor,
                key_id,
                {"new_key_id": new_id, "grace_until": grace_until},
            )
        return new_id, api_key

    # -- revoked tokens ---------------------------------------------------------------

    def revoke_token(self, jti: str, expires_at: datetime, *, actor: str | None = None) -> None:
        """Refuse the JWT with this ``jti`` until it expires anyway. Idempotent."""
        if not 0 < len(jti) <= MAX_JTI_LENGTH:
            raise InvalidValueError(f"jti must have 1-{MAX_JTI_LENGTH} characters")
        expires_at = _aware(expires_at, self._clock)
        try:
            with self._sessions.begin() as session:
                session.add(RevokedToken(jti=jti, expires_at=expires_at, revoked_at=self._clock()))
                session.flush()
                self._add_audit(session, "token.revoked", actor, jti, {"expires_at": expires_at})
        except IntegrityError:
            pass  # already revoked

    def is_token_revoked(self, jti: str) -> bool:
        with self._sessions() as session:
            return session.get(RevokedToken, jti) is not None

    def revoked_tokens_since(
        self, since: datetime | None, now: datetime | None = None
    ) -> list[RevokedTokenRecord]:
        """Unexpired revocations with ``revoked_at >= since`` (all if None), for a
        per-worker cache. Overlap successive ``since`` values by a few seconds: a
        revocation written by a slow transaction can commit after a later one."""
        now = _aware(now, self._clock)
        query = select(RevokedToken).where(RevokedToken.expires_at > now)
        if since is not None:
            query = query.where(RevokedToken.revoked_at >= _aware(since, self._clock))
        with self._sessions() as session:
            return [
                RevokedTokenRecord(row.jti, row.expires_at, row.revoked_at)
                for row in session.scalars(query.order_by(RevokedToken.revoked_at))
            ]

    def purge_expired_revocations(self, now: datetime | None = None) -> int:
        """Forget revocations of tokens that have expired anyway; returns how many."""
        now = _aware(now, self._clock)
        with self._sessions.begin() as session:
            purged = session.execute(
                delete(RevokedToken)
                .where(RevokedToken.expires_at <= now)
                .returning(RevokedToken.jti)
            ).all()
        return len(purged)

    # -- liveness of a principal ------------------------------------------------------

    def is_subject_active(
        self, kind: PrincipalKind, subject: str, now: datetime | None = None
    ) -> bool:
        """Whether a token's subject may still act: it exists and is not disabled (or, for
        a key, revoked, expired or past its grace). A lockout does not end issued tokens."""
        now = _aware(now, self._clock)
        with self._sessions() as session:
            if kind == "client":
                client = session.get(Client, subject)
                return client is not None and not client.disabled
            if kind == "user":
                user = session.get(User, subject)
                return user is not None and not user.disabled
            if kind == "api_key":
                key = session.get(ApiKey, subject)
                return key is not None and _api_key_record(key).unusable_reason(now) is None
        return False

    # -- audit ------------------------------------------------------------------------

    def audit(
        self,
        event: str,
        actor: str | None,
        subject: str | None,
        detail: dict[str, Any] | None = None,
        ip: str | None = None,
    ) -> None:
        """Append an audit row. Keys that look secret (``*secret*``, ``*password*``,
        ``*hash*``...) and values shaped like API keys are replaced by ``[redacted]``."""
        with self._sessions.begin() as session:
            self._add_audit(session, event, actor, subject, detail or {}, ip=ip)

    def recent_audit_events(
        self, limit: int = 100, *, event: str | None = None
    ) -> list[AuditRecord]:
        """The newest audit rows first."""
        query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
        if event is not None:
            query = query.where(AuditEvent.event == event)
        with self._sessions() as session:
            return [
                AuditRecord(row.id, row.at, row.event, row.actor, row.subject, row.detail, row.ip)
                for row in session.scalars(query)
            ]

    def _add_audit(
        self,
        session: Session,
        event: str,
        actor: str | None,
        subject: str | None,
        detail: dict[str, Any],
        ip: str | None = None,
    ) -> None:
        session.add(
            AuditEvent(
                at=self._clock(),
                event=event[:64],
                actor=_clip(actor, MAX_LABEL_LENGTH),
                subject=_clip(subject, MAX_LABEL_LENGTH),
                detail=_sanitise(detail),
                ip=_clip(ip, 45),
            )
        )

    def _disable(
        self,
        model: type[Client] | type[User],
        key_column: Any,
        key: str,
        event: str,
        actor: str | None,
    ) -> bool:
        with self._sessions.begin() as session:
            found = session.execute(
                update(model).where(key_column == key).values(disabled=True).returning(key_column)
            ).first()
            if found is None:
                return False
            self._add_audit(session, event, actor, key, {})
        return True
