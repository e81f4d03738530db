"""The audit trail: who changed or failed to use which credential, when, from where.

Every repository writes its audit row through ``AuditLog.add`` in the same transaction
as the change, so a change is never kept without its row (nor a row without its change).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from auth.models import AuditEvent
from auth.store.context import StoreContext
from auth.store.records import MAX_LABEL_LENGTH, AuditRecord, _clip, _sanitise


class AuditLog:
    def __init__(self, context: StoreContext) -> None:
        self._sessions = context.sessions
        self._clock = context.clock

    def record(
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
            self.add(session, event, actor, subject, detail or {}, ip=ip)

    def recent(self, limit: int = 100, *, event: str | None = None) -> list[AuditRecord]:
        """The newest audit rows first."""
        query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
        if event is not None:
            query = query.where(AuditEvent.event == event)
        with self._sessions() as session:
            return [
                AuditRecord(row.id, row.at, row.event, row.actor, row.subject, row.detail, row.ip)
                for row in session.scalars(query)
            ]

    def add(
        self,
        session: Session,
        event: str,
        actor: str | None,
        subject: str | None,
        detail: dict[str, Any],
        ip: str | None = None,
    ) -> None:
        """The row, inside the caller's transaction (redacted as ``record`` says)."""
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
