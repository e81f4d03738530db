"""Partner API keys: shown once, kept as an HMAC, filtered by account, rotated with a grace.

``owner`` arguments name the account (API keys called it their owner before accounts
existed); the account is created on first use, as ``account_for_update`` says.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from auth.errors import KeyLimitError
from auth.models import ApiKey
from auth.secrets import DUMMY_HMAC, generate_api_key, hmac_secret, parse_api_key, verify_secret
from auth.store.accounts import account_for_update
from auth.store.context import Repository
from auth.store.records import (
    MAX_LABEL_LENGTH,
    AccountRecord,
    ApiKeyRecord,
    ScopesArg,
    _account_record,
    _api_key_record,
    _aware,
    _clip,
    _plan,
    _scopes_text,
)

# last_used_at is bookkeeping, not security: one write per key per minute at most.
LAST_USED_RESOLUTION = timedelta(minutes=1)
DEFAULT_ROTATION_GRACE = timedelta(hours=1)


class ApiKeyRepository(Repository):
    def create(
        self,
        owner: str,
        scopes: ScopesArg,
        plan: str | None = None,
        expires_at: datetime | None = None,
        created_by: str | None = None,
        *,
        max_active: int | None = None,
    ) -> tuple[str, str]:
        """A new key of the account ``owner``; returns ``(key_id, api_key)``. Only the
        secret's HMAC is kept. ``expires_at=None`` is a key that never expires: the
        store keeps what it is given, the lifetime policy is the caller's.

        The key's own plan is ``plan``, else its account's. With ``max_active``, raises
        ``KeyLimitError`` instead when the account would then hold more active keys
        (counted in the same transaction, under the account's lock)."""
        scope_text = _scopes_text(scopes)
        plan = _plan(plan) if plan is not None else None
        if expires_at is not None:
            expires_at = _aware(expires_at, self._clock)
        key_id, secret, api_key = generate_api_key()
        with self._sessions.begin() as session:
            account, new_account = account_for_update(session, owner, plan, clock=self._clock)
            plan = plan or account.plan
            session.add(
                ApiKey(
                    key_id=key_id,
                    account=account.name,
                    secret_hmac=hmac_secret(self._context.pepper, secret),
                    scopes=scope_text,
                    plan=plan,
                    created_at=self._clock(),
                    expires_at=expires_at,
                    created_by=_clip(created_by, MAX_LABEL_LENGTH),
                )
            )
            session.flush()
            if max_active is not None and self._active_count(session, account.name) > max_active:
                raise KeyLimitError(max_active)  # rolls the transaction back
            self._audit.add(
                session,
                "api_key.created",
                created_by,
                key_id,
                {
                    "owner": account.name,
                    "scopes": scope_text,
                    "plan": plan,
                    "expires_at": expires_at,
                    "new_account": new_account,
                },
            )
        return key_id, api_key

    def _active_count(self, session: Session, account: str) -> int:
        """Keys of ``account`` that work and are not being rotated out: a rotation
        replaces a key, so the old one in its grace does not count against the cap."""
        now = self._clock()
        return int(
            session.execute(
                select(func.count())
                .select_from(ApiKey)
                .where(
                    ApiKey.account == account,
                    ApiKey.revoked_at.is_(None),
                    ApiKey.grace_until.is_(None),
                    or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now),
                )
            ).scalar_one()
        )

    def active_count(self, owner: str) -> int:
        """How many keys of the account count against ``MAX_KEYS_PER_ACCOUNT``."""
        with self._sessions() as session:
            return self._active_count(session, owner)

    def authenticate(
        self, api_key: str, now: datetime | None = None, *, ip: str | None = None
    ) -> ApiKeyRecord | None:
        """The key's record if it is well-formed, matches, and is neither revoked, expired
        nor past its rotation grace; else None. Refreshes ``last_used_at`` at most once a
        minute per key, so a busy key does not turn every request into a write."""
        now = _aware(now, self._clock)
        parsed = parse_api_key(api_key)
        if parsed is None:
            self._audit.record("api_key.auth_failed", None, None, {"reason": "malformed"}, ip=ip)
            return None
        key_id, secret = parsed
        record: ApiKeyRecord | None = None
        stored = DUMMY_HMAC
        account_disabled = False
        with self._sessions() as session:
            row = session.get(ApiKey, key_id)
            if row is not None:
                record, stored = _api_key_record(row), row.secret_hmac
                account_disabled = row.account_row.disabled
        ok = verify_secret(self._context.pepper, secret, stored)
        if record is None:
            reason: str | None = "unknown_key"
        else:
            reason = "bad_secret" if not ok else record.unusable_reason(now)
            if reason is None and account_disabled:
                reason = "account_disabled"
        if record is None or reason is not None:
            self._audit.record("api_key.auth_failed", None, key_id, {"reason": reason}, ip=ip)
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

    def get(self, key_id: str, *, owner: str | None = None) -> ApiKeyRecord | None:
        """The key, or None if missing or (with ``owner``) someone else's: the same answer."""
        with self._sessions() as session:
            row = session.get(ApiKey, key_id)
            if row is None or (owner is not None and row.account != owner):
                return None
            return _api_key_record(row)

    def revoke(self, key_id: str, actor: str | None = None, *, owner: str | None = None) -> bool:
        """Revoke a key; False if there is none (or, with ``owner``, it is someone else's).
        Revoking a revoked key changes nothing and answers True."""
        conditions = [ApiKey.key_id == key_id]
        if owner is not None:
            conditions.append(ApiKey.account == owner)
        with self._sessions.begin() as session:
            changed = session.execute(
                update(ApiKey)
                .where(*conditions, ApiKey.revoked_at.is_(None))
                .values(revoked_at=self._clock())
                .returning(ApiKey.account)
            ).first()
            if changed is None:
                return session.execute(select(ApiKey.key_id).where(*conditions)).first() is not None
            self._audit.add(session, "api_key.revoked", actor, key_id, {"owner": changed.account})
        return True

    def rotate(
        self,
        key_id: str,
        *,
        actor: str | None = None,
        owner: str | None = None,
        grace: timedelta = DEFAULT_ROTATION_GRACE,
        not_after: datetime | None = None,
        plan: str | None = None,
    ) -> tuple[str, str] | None:
        """A new key with the same account, scopes, plan and expiry; the old one keeps
        working for ``grace`` (never past its own expiry). ``not_after`` makes the new
        key expire then if that is earlier than the old key's expiry (or the old key
        never expired); ``plan`` replaces its plan. None if the old key is missing,
        someone else's, revoked, expired or already rotated. Returns ``(key_id, api_key)``.
        """
        now = self._clock()
        if not_after is not None:
            not_after = _aware(not_after, self._clock)
        new_plan = _plan(plan) if plan is not None else None
        conditions = [
            ApiKey.key_id == key_id,
            ApiKey.revoked_at.is_(None),
            ApiKey.grace_until.is_(None),
            or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now),
        ]
        if owner is not None:
            conditions.append(ApiKey.account == owner)
        new_id, secret, api_key = generate_api_key()
        with self._sessions.begin() as session:
            old = session.execute(
                update(ApiKey)
                .where(*conditions)
                .values(grace_until=now + grace)
                .returning(ApiKey.account, ApiKey.scopes, ApiKey.plan, ApiKey.expires_at)
            ).first()
            if old is None:
                return None
            grace_until = now + grace
            if old.expires_at is not None and old.expires_at < grace_until:
                grace_until = old.expires_at
                session.execute(
                    update(ApiKey).where(ApiKey.key_id == key_id).values(grace_until=grace_until)
                )
            expires_at = old.expires_at
            if not_after is not None and (expires_at is None or not_after < expires_at):
                expires_at = not_after
            session.add(
                ApiKey(
                    key_id=new_id,
                    account=old.account,
                    secret_hmac=hmac_secret(self._context.pepper, secret),
                    scopes=old.scopes,
                    plan=new_plan or old.plan,
                    created_at=now,
                    expires_at=expires_at,
                    created_by=_clip(actor, MAX_LABEL_LENGTH),
                    rotated_from=key_id,
                )
            )
            session.flush()
            self._audit.add(
                session,
                "api_key.rotated",
                actor,
                key_id,
                {"new_key_id": new_id, "grace_until": grace_until, "expires_at": expires_at},
            )
        return new_id, api_key

    def is_active(self, key_id: str, now: datetime) -> bool:
        """Exists, is neither revoked, expired nor past its rotation grace at ``now``, and
        its account is enabled."""
        return self.active_account(key_id, now) is not None

    def active_account(self, key_id: str, now: datetime) -> AccountRecord | None:
        """The account of a usable key whose account is enabled, else None."""
        with self._sessions() as session:
            key = session.get(ApiKey, key_id)
            if key is None or key.account_row.disabled:
                return None
            if _api_key_record(key).unusable_reason(now) is not None:
                return None
            return _account_record(key.account_row)

    # Last: below it, ``list`` in an annotation would name this method, not the builtin.
    def list(self, owner: str | None = None) -> list[ApiKeyRecord]:
        query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.key_id)
        if owner is not None:
            query = query.where(ApiKey.account == owner)
        with self._sessions() as session:
            return [_api_key_record(row) for row in session.scalars(query)]
