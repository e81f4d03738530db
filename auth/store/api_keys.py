"""Partner API keys: shown once, kept as an HMAC, filtered by owner, rotated with a grace."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update

from auth.models import ApiKey
from auth.secrets import DUMMY_HMAC, generate_api_key, hmac_secret, parse_api_key, verify_secret
from auth.store.context import Repository
from auth.store.records import (
    MAX_LABEL_LENGTH,
    ApiKeyRecord,
    ScopesArg,
    _api_key_record,
    _aware,
    _clip,
    _label,
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
                    secret_hmac=hmac_secret(self._context.pepper, secret),
                    scopes=scope_text,
                    plan=plan,
                    created_at=self._clock(),
                    expires_at=expires_at,
                    created_by=_clip(created_by, MAX_LABEL_LENGTH),
                )
            )
            session.flush()
            self._audit.add(
                session,
                "api_key.created",
                created_by,
                key_id,
                {"owner": owner, "scopes": scope_text, "plan": plan, "expires_at": expires_at},
            )
        return key_id, api_key

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
        with self._sessions() as session:
            row = session.get(ApiKey, key_id)
            if row is not None:
                record, stored = _api_key_record(row), row.secret_hmac
        ok = verify_secret(self._context.pepper, secret, stored)
        if record is None:
            reason: str | None = "unknown_key"
        else:
            reason = "bad_secret" if not ok else record.unusable_reason(now)
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
            if row is None or (owner is not None and row.owner != owner):
                return None
            return _api_key_record(row)

    def revoke(self, key_id: str, actor: str | None = None, *, owner: str | None = None) -> bool:
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
            self._audit.add(session, "api_key.revoked", actor, key_id, {"owner": changed.owner})
        return True

    def rotate(
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
                    secret_hmac=hmac_secret(self._context.pepper, secret),
                    scopes=old.scopes,
                    plan=old.plan,
                    created_at=now,
                    expires_at=old.expires_at,
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
                {"new_key_id": new_id, "grace_until": grace_until},
            )
        return new_id, api_key

    def is_active(self, key_id: str, now: datetime) -> bool:
        """Exists and is neither revoked, expired nor past its rotation grace at ``now``."""
        with self._sessions() as session:
            key = session.get(ApiKey, key_id)
            return key is not None and _api_key_record(key).unusable_reason(now) is None

    # Last: below it, ``list`` in an annotation would name this method, not the builtin.
    def list(self, owner: str | None = None) -> list[ApiKeyRecord]:
        query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.key_id)
        if owner is not None:
            query = query.where(ApiKey.owner == owner)
        with self._sessions() as session:
            return [_api_key_record(row) for row in session.scalars(query)]
