"""What the store hands out and what it accepts: frozen records and the input checks.

Callers get small frozen records, never ORM rows, and never a hash: a record can be
printed or logged as it is. The ``_``-prefixed helpers are private to ``auth.store``:
every repository validates and maps rows the same way.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from auth.errors import InvalidValueError
from auth.models import Account, ApiKey, Client, User
from auth.principal import Principal
from auth.scopes import UnknownScopeError, format_scopes, parse_scopes
from auth.secrets import parse_api_key

ScopesArg = str | Iterable[str]

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


@dataclass(frozen=True, slots=True)
class AccountRecord:
    """The customer a credential belongs to: its plan is the budget all of them share."""

    name: str
    plan: str
    disabled: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ClientRecord:
    client_id: str
    name: str | None
    scopes: frozenset[str]
    plan: str  # the client's own plan: a cap inside its account's budget
    disabled: bool
    created_at: datetime
    account: str
    account_plan: str

    def principal(self) -> Principal:
        return Principal(
            kind="client",
            subject=self.client_id,
            scopes=self.scopes,
            plan=self.plan,
            account=self.account,
            account_plan=self.account_plan,
        )


@dataclass(frozen=True, slots=True)
class UserRecord:
    username: str
    scopes: frozenset[str]
    plan: str
    disabled: bool
    failed_logins: int
    locked_until: datetime | None
    created_at: datetime
    account: str
    account_plan: str

    def principal(self) -> Principal:
        return Principal(
            kind="user",
            subject=self.username,
            scopes=self.scopes,
            plan=self.plan,
            account=self.account,
            account_plan=self.account_plan,
        )


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    key_id: str
    account: str
    scopes: frozenset[str]
    plan: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    created_by: str | None
    rotated_from: str | None
    grace_until: datetime | None
    account_plan: str

    @property
    def owner(self) -> str:
        """The account's name (API keys called it their owner before accounts existed)."""
        return self.account

    @property
    def ends_at(self) -> datetime | None:
        """When the key stops working at the latest: its expiry or its rotation grace."""
        ends = [t for t in (self.expires_at, self.grace_until) if t is not None]
        return min(ends) if ends else None

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
        return Principal(
            kind="api_key",
            subject=self.key_id,
            scopes=self.scopes,
            plan=self.plan,
            account=self.account,
            account_plan=self.account_plan,
            expires_at=self.ends_at,
        )


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


def _account_record(row: Account) -> AccountRecord:
    return AccountRecord(
        name=row.name, plan=row.plan, disabled=row.disabled, created_at=row.created_at
    )


def _client_record(row: Client) -> ClientRecord:
    return ClientRecord(
        client_id=row.client_id,
        name=row.name,
        scopes=_read_scopes(row.scopes),
        plan=row.plan,
        disabled=row.disabled,
        created_at=row.created_at,
        account=row.account,
        account_plan=row.account_row.plan,
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
        account=row.account,
        account_plan=row.account_row.plan,
    )


def _api_key_record(row: ApiKey) -> ApiKeyRecord:
    return ApiKeyRecord(
        key_id=row.key_id,
        account=row.account,
        scopes=_read_scopes(row.scopes),
        plan=row.plan,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
        created_by=row.created_by,
        rotated_from=row.rotated_from,
        grace_until=row.grace_until,
        account_plan=row.account_row.plan,
    )
