"""Daily use per caller, read from the prediction log (what ``/v1/usage`` shows)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine, func, select

from monitoring.models import PredictionLogRow


@dataclass
class DailyUsage:
    date: str
    requests: int = 0  # prediction requests answered
    predictions: int = 0  # rows predicted (a batch counts each row)
    by_key: dict[str, int] = field(default_factory=dict)  # requests per identity's subject


def daily_usage(engine: Engine, identities: list[str], since: datetime) -> list[DailyUsage]:
    """Answered (not shadow) predictions of ``identities`` since ``since``, newest day first."""
    day = func.date(PredictionLogRow.at)
    query = (
        select(day, PredictionLogRow.principal, func.count(), func.sum(PredictionLogRow.batch_size))
        .where(
            PredictionLogRow.principal.in_(identities),
            PredictionLogRow.at >= since,
            PredictionLogRow.shadow.is_(False),
        )
        .group_by(day, PredictionLogRow.principal)
    )
    days: dict[str, DailyUsage] = {}
    with engine.connect() as connection:
        for date, principal, requests, predictions in connection.execute(query):
            entry = days.setdefault(str(date), DailyUsage(date=str(date)))
            entry.requests += int(requests)
            entry.predictions += int(predictions or 0)
            entry.by_key[str(principal).split(":", 1)[-1]] = int(requests)
    return sorted(days.values(), key=lambda d: d.date, reverse=True)
