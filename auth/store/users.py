"""Password users (the password grant): argon2 hashes, failed-login counts and lockouts."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from auth.errors import DuplicateError
from auth.models import User
from auth.passwords import check_password_policy
from auth.store.accounts import account_for_update
from auth.store.audit import AuditLog
from auth.store.context import Repository, StoreContext
from auth.store.records import (
    _USERNAME_RE,
    AccountRecord,
    ScopesArg,
    UserRecord,
    _account_record,
    _aware,
    _plan,
    _scopes_text,
    _user_record,
    _username,
)


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


class UserRepository(Repository):
    def __init__(self, context: StoreContext, audit: AuditLog, lockout: LockoutPolicy) -> None:
        super().__init__(context, audit)
        self._hasher = context.hasher
        self._lockout = lockout
        self._hasher.dummy_hash()  # pay for it now, not on the first unknown username

    def create(
        self,
        username: str,
        password: str,
        scopes: ScopesArg,
        plan: str | None = None,
        *,
        account: str | None = None,
        actor: str | None = None,
    ) -> UserRecord:
        """A new password user; ``PasswordPolicyError`` for a too short or too long password.

        It belongs to ``account``, by default an account of the username, created on first
        use with ``plan`` (else the default plan); its own plan is ``plan``, else the
        account's.
        """
        username = _username(username)
        scope_text = _scopes_text(scopes)
        plan = _plan(plan) if plan is not None else None
        check_password_policy(password)
        password_hash = self._hasher.hash(password)  # slow: outside the transaction
        try:
            with self._sessions.begin() as session:
                owner, new_account = account_for_update(
                    session, account or username, plan, clock=self._clock
                )
                row = User(
                    username=username,
                    account=owner.name,
                    password_hash=password_hash,
                    scopes=scope_text,
                    plan=plan or owner.plan,
                    disabled=False,
                    failed_logins=0,
                    locked_until=None,
                    created_at=self._clock(),
                )
                session.add(row)
                session.flush()
                self._audit.add(
                    session,
                    "user.created",
                    actor,
                    username,
                    {
                        "scopes": scope_text,
                        "plan": row.plan,
                        "account": owner.name,
                        "new_account": new_account,
                    },
                )
                record = _user_record(row)
        except IntegrityError:
            raise DuplicateError("user", username) from None
        return record

    def authenticate(
        self, username: str, password: str, now: datetime | None = None, *, ip: str | None = None
    ) -> UserRecord | None:
        """The user if the password matches, else None; the same None for unknown, locked,
        disabled and wrong. Each path runs one argon2 verification, so timing matches.

        Raises ``PasswordCheckBusy`` when too many checks already run (shed load).
        """
        now = _aware(now, self._clock)
        record: UserRecord | None = None
        stored_hash: str | None = None
        account_disabled = False
        # Only a well-formed name can exist; anything else (a NUL byte, which PostgreSQL
        # refuses in text, or a megabyte) is simply unknown, without a database read.
        if _USERNAME_RE.fullmatch(username):
            with self._sessions() as session:
                row = session.get(User, username)
                if row is not None:
                    record, stored_hash = _user_record(row), row.password_hash
                    account_disabled = row.account_row.disabled
        if record is None:
            self._hasher.verify(None, password)
            # An unknown name may be a password typed in the wrong field: do not keep it.
            self._audit.record("user.auth_failed", None, None, {"reason": "unknown_user"}, ip=ip)
            return None
        if record.locked_until is not None and record.locked_until > now:
            self._hasher.verify(None, password)
            self._audit.record(
                "user.auth_failed",
                None,
                record.username,
                {"reason": "locked", "locked_until": record.locked_until},
                ip=ip,
            )
            return None
        if record.disabled or account_disabled:
            self._hasher.verify(None, password)
            reason = "disabled" if record.disabled else "account_disabled"
            self._audit.record("user.auth_failed", None, record.username, {"reason": reason}, ip=ip)
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
            self._audit.add(session, "user.auth_failed", None, username, detail, ip=ip)

    def get(self, username: str) -> UserRecord | None:
        with self._sessions() as session:
            row = session.get(User, username)
            return _user_record(row) if row is not None else None

    def disable(self, username: str, *, actor: str | None = None) -> bool:
        """Disable a user; False if there is no such user."""
        return self._disable(User, User.username, username, "user.disabled", actor)

    def is_active(self, username: str) -> bool:
        """Exists and is not disabled, nor is its account; a lockout does not end issued
        tokens."""
        return self.active_account(username) is not None

    def active_account(self, username: str) -> AccountRecord | None:
        """The account of an enabled user whose account is enabled, else None."""
        with self._sessions() as session:
            user = session.get(User, username)
            if user is None or user.disabled or user.account_row.disabled:
                return None
            return _account_record(user.account_row)

    # Last: below it, ``list`` in an annotation would name this method, not the builtin.
    def list(self, account: str | None = None) -> list[UserRecord]:
        query = select(User).order_by(User.created_at, User.username)
        if account is not None:
            query = query.where(User.account == account)
        with self._sessions() as session:
            return [_user_record(row) for row in session.scalars(query)]
