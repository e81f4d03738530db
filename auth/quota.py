"""Who pays for a request: the account's budget, and a credential's own plan as a cap.

The policy is one pure function, :func:`quota_subjects`: given the caller and the plan
settings, the counters the request is charged on and the limit of each. Whatever
counts (SlowAPI's decorators today, an ASGI guard tomorrow) calls it and nothing else
decides. The rules:

* every credential of an account (its clients and their tokens, its users, its API
  keys, however many are minted or rotated) spends one budget, counted under
  ``<account plan>|account:<name>`` with the account plan's limit; answers, the
  ``RateLimit`` fields and ``/v1/usage`` report that budget;
* a credential whose own plan allows less than its account's is also counted under
  ``<credential plan>|<kind>:<subject>`` with its own plan's limit: a cap inside the
  account's budget, never a budget of its own.

A plan's limit is its ``RATE_LIMIT_PLANS`` entry, else ``RATE_LIMIT_PREDICT``. Plans are
ordered by how many requests a second they allow (the tightest of a multi-part limit).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import NamedTuple, Protocol

from limits import parse_many

from auth.principal import Principal

ACCOUNT_PREFIX = "account:"


class PlanSettings(Protocol):
    """What the policy reads; ``app.settings.Settings`` has it."""

    @property
    def rate_limit_predict(self) -> str: ...
    @property
    def rate_limit_plans(self) -> Mapping[str, str]: ...


class QuotaSubject(NamedTuple):
    key: str  # the counter, "<plan>|account:<name>" or "<plan>|<kind>:<subject>"
    limit: str  # a limit in the ``limits`` notation, e.g. "120/minute"


def plan_limit(plan: str, settings: PlanSettings) -> str:
    """The plan's limit: its override, else RATE_LIMIT_PREDICT."""
    return settings.rate_limit_plans.get(plan, settings.rate_limit_predict)


@functools.lru_cache(maxsize=256)
def _per_second(limit: str) -> float:
    return min(item.amount / item.get_expiry() for item in parse_many(limit))


def plan_rate(plan: str, settings: PlanSettings) -> float:
    """Requests a second the plan allows at most (the tightest of its limits)."""
    return _per_second(plan_limit(plan, settings))


def outranks(plan: str, other: str, settings: PlanSettings) -> bool:
    """Whether ``plan`` allows more than ``other``."""
    return plan_rate(plan, settings) > plan_rate(other, settings)


def key_plan(key: str) -> str:
    """The plan a counter's key was made for (what picks its limit)."""
    return key.split("|", 1)[0]


def quota_subjects(principal: Principal, settings: PlanSettings) -> list[QuotaSubject]:
    """The counters ``principal`` is charged on, the account's budget first.

    A request is allowed only if every counter has room for its cost; implementations
    charge the caps before the account's budget (or check all before charging any), so a
    capped credential refused by its own cap never spends its siblings' budget.
    A principal made outside the store (no account) pays on its own identity.
    """
    if principal.account is None:
        own = plan_limit(principal.plan, settings)
        return [QuotaSubject(f"{principal.plan}|{principal.id}", own)]
    budget = principal.budget_plan
    subjects = [
        QuotaSubject(f"{budget}|{ACCOUNT_PREFIX}{principal.account}", plan_limit(budget, settings))
    ]
    if outranks(budget, principal.plan, settings):
        subjects.append(
            QuotaSubject(f"{principal.plan}|{principal.id}", plan_limit(principal.plan, settings))
        )
    return subjects
