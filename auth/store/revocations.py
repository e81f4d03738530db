"""Revoked access tokens (RFC 7009), kept by ``jti`` only until they expire anyway."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from auth.errors import InvalidValueError
from auth.models import RevokedToken
from auth.store.context import Repository
from auth.store.records import MAX_JTI_LENGTH, RevokedTokenRecord, _aware


class RevocationRepository(Repository):
    def revoke(self, jti: str, expires_at: datetime, *, actor: str | None = None) -> None:
        """Refuse the JWT with this ``jti`` until it expires anyway. Idempotent."""
        if not 0 < len(jti) <= MAX_JTI_LENGTH:
            raise InvalidValueError(f"jti must have 1-{MAX_JTI_LENGTH} characters")
        expires_at = _aware(expires_at, self._clock)
        try:
            with self._sessions.begin() as session:
                session.add(RevokedToken(jti=jti, expires_at=expires_at, revoked_at=self._clock()))
                session.flush()
                self._audit.add(session, "token.revoked", actor, jti, {"expires_at": expires_at})
        except IntegrityError:
            pass  # already revoked

    def is_revoked(self, jti: str) -> bool:
        with self._sessions() as session:
            return session.get(RevokedToken, jti) is not None

    def since(
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

    def purge_expired(self, now: datetime | None = None) -> int:
        """Forget revocations of tokens that have expired anyway; returns how many."""
        now = _aware(now, self._clock)
        with self._sessions.begin() as session:
            purged = session.execute(
                delete(RevokedToken)
                .where(RevokedToken.expires_at <= now)
                .returning(RevokedToken.jti)
            ).all()
        return len(purged)
