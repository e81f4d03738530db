"""What a caller's account has used and has left, from the counters that already exist.

The remaining quota comes from the rate limiter's own window for the account (the same
counter that answers 429, shared by all of its credentials); daily counts come from the
prediction log, for every client, user and key of the account. Nothing here keeps a
second bookkeeping that could disagree with either.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from anyio import from_thread
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from app.deps import Authenticated, ServicesDep
from app.limits import PredictionBudget, QuotaLimiter, caller_key, predict_limit
from app.openapi import problems
from app.settings import Settings
from app.state import Services
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
    account: str | None = Field(description="The account whose budget and use this is.")
    plan: str = Field(description="The account's plan: the budget all its credentials share.")
    quota: Quota | None = Field(description="The account's current prediction window.")
    days: list[Day] = Field(description=f"The last {DAYS} days with any use, newest first.")


def _identities(principal: Principal, store: CredentialStore) -> list[str]:
    """Every client, user and API key of the caller's account (the caller alone if it
    has none)."""
    if principal.account is None:
        return [principal.id]
    account = principal.account
    return sorted(
        {principal.id}
        | {f"api_key:{k.key_id}" for k in store.api_keys.list(account)}
        | {f"client:{c.client_id}" for c in store.clients.list(account)}
        | {f"user:{u.username}" for u in store.users.list(account)}
    )


async def _quota(caller: Principal, budget: PredictionBudget) -> Quota:
    """The caller's prediction window, read (cost 0) from the counter that answers 429."""
    answer = await budget.charge(caller, 0)
    return Quota(
        limit=answer.limit,
        remaining=answer.remaining,
        window_seconds=answer.window,
        reset_at=datetime.fromtimestamp(answer.reset_at, UTC),
    )


def _days(built: Services, caller: Principal) -> list[Day]:
    identities = _identities(caller, built.store)
    since = datetime.now(UTC) - timedelta(days=DAYS)
    # The same database as the store: an outage is a 503 here too, not a 500.
    with built.store.health.guard():
        return [
            Day.model_validate(day, from_attributes=True)
            for day in daily_usage(built.prediction_log_engine, identities, since)
        ]


def build_router(limiter: QuotaLimiter, settings: Settings) -> APIRouter:
    router = APIRouter(tags=["keys"], responses=problems(401, 429, 503))
    quota = limiter.shared_limit(predict_limit(settings), scope="usage", key_func=caller_key)

    @router.get("/v1/usage", summary="The caller's request counts and remaining quota")
    @quota
    def usage(
        request: Request, response: Response, caller: Authenticated, built: ServicesDep
    ) -> Usage:
        # Sync, so FastAPI runs it, and SlowAPI's storage check before it, in its
        # threadpool: no Redis or database call on the event loop.
        return Usage(
            principal=caller.id,
            account=caller.account,
            plan=caller.budget_plan,
            quota=from_thread.run(_quota, caller, built.budget),
            days=_days(built, caller),
        )

    return router
