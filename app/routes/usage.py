"""What a caller has used and has left, from the counters that already exist.

The remaining quota comes from the rate limiter's own window (the same counter
that answers 429); daily counts come from the prediction log. Nothing here keeps
a second bookkeeping that could disagree with either.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Request, Response
from limits import parse
from pydantic import BaseModel, Field

from app.deps import Authenticated, ServicesDep
from app.limits import KEY_PREFIX, PREDICT_SCOPE, QuotaLimiter, caller_key, predict_limit
from app.openapi import problems
from app.settings import Settings
from auth.principal import Principal
from auth.store import CredentialStore
from monitoring.usage import daily_usage

DAYS = 30


class Quota(BaseModel):
    limit: int
    remaining: int
    window_seconds: int
    reset_at: datetime


class Day(BaseModel):
    date: str
    requests: int = Field(description="Prediction requests answered.")
    predictions: int = Field(description="Rows predicted (a batch counts each row).")
    by_key: dict[str, int] = Field(description="Requests per identity, e.g. per API key.")


class Usage(BaseModel):
    principal: str
    plan: str
    quota: Quota | None = Field(description="The current prediction window; null if unknown.")
    days: list[Day] = Field(description=f"The last {DAYS} days with any use, newest first.")


def _identities(principal: Principal, store: CredentialStore) -> list[str]:
    """The caller itself, and for an API key every key of the same owner."""
    if principal.kind != "api_key":
        return [principal.id]
    record = store.api_keys.get(principal.subject)
    if record is None:
        return [principal.id]
    return [f"api_key:{k.key_id}" for k in store.api_keys.list(record.owner)]


def _quota(request: Request, limiter: QuotaLimiter, settings: Settings) -> Quota | None:
    key = caller_key(request)
    item = parse(predict_limit(settings)(key))
    try:
        stats = limiter.limiter.get_window_stats(item, KEY_PREFIX, key, PREDICT_SCOPE)
    except Exception:  # storage down: say nothing rather than guess
        return None
    return Quota(
        limit=item.amount,
        remaining=stats.remaining,
        window_seconds=item.get_expiry(),
        reset_at=datetime.fromtimestamp(stats.reset_time, UTC),
    )


def build_router(limiter: QuotaLimiter, settings: Settings) -> APIRouter:
    router = APIRouter(tags=["keys"], responses=problems(401, 429, 503))
    quota = limiter.shared_limit(predict_limit(settings), scope="usage", key_func=caller_key)

    @router.get("/v1/usage", summary="The caller's request counts and remaining quota")
    @quota
    def usage(
        request: Request, response: Response, caller: Authenticated, built: ServicesDep
    ) -> Usage:
        identities = _identities(caller, built.store)
        since = datetime.now(UTC) - timedelta(days=DAYS)
        # The same database as the store: an outage is a 503 here too, not a 500.
        with built.store.health.guard():
            days = [
                Day.model_validate(day, from_attributes=True)
                for day in daily_usage(built.prediction_log_engine, identities, since)
            ]
        return Usage(
            principal=caller.id,
            plan=caller.plan,
            quota=_quota(request, limiter, settings),
            days=days,
        )

    return router
