"""Nothing minted outranks its minter: the terms of a key made or rotated by a caller.

Pure functions, no store and no web framework: the ``/v1/keys`` routes read what they
need, ask here, and only then write. A new or rotated key gets

* scopes the minter holds (all of them, for a rotated key: else the minter would get a
  fresh secret for powers it does not have);
* a plan no higher than the minter's own credential's (``auth.quota.outranks``);
* an expiry no later than the minter's own credential's end (an API key's expiry or
  rotation grace; a token's subject has none) and than ``max_lifetime`` from now. A
  new key asked for without an expiry gets the latest of those; a rotated key keeps
  the old key's expiry unless asked for an earlier one, and is cut back to that bound.

Callers holding ``admin`` are the one exception: any plan and any expiry within
``max_lifetime``. A key that never expires is made only by an operator, explicitly
(``housing-api keys create --no-expiry``), never over HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from auth.principal import Principal
from auth.quota import PlanSettings, outranks
from auth.scopes import ADMIN


class MintRefused(Exception):
    """The key asked for would outrank its minter; ``what`` is scope, plan or expiry."""

    def __init__(self, what: str, message: str) -> None:
        super().__init__(message)
        self.what = what
        self.message = message


@dataclass(frozen=True, slots=True)
class KeyTerms:
    scopes: frozenset[str]
    plan: str
    expires_at: datetime


def _latest(
    minter: Principal, minter_ends_at: datetime | None, now: datetime, max_lifetime: timedelta
) -> datetime:
    latest = now + max_lifetime
    if ADMIN not in minter.scopes and minter_ends_at is not None:
        latest = min(latest, minter_ends_at)
    return latest


def _plan_allowed(minter: Principal, plan: str, settings: PlanSettings) -> bool:
    return ADMIN in minter.scopes or not outranks(plan, minter.plan, settings)


def new_key_terms(
    minter: Principal,
    *,
    scopes: frozenset[str],
    plan: str | None,
    expires_at: datetime | None,
    minter_ends_at: datetime | None,
    now: datetime,
    max_lifetime: timedelta,
    settings: PlanSettings,
) -> KeyTerms:
    """The terms of a key ``minter`` asks for, or ``MintRefused``."""
    if not scopes or not scopes <= minter.scopes:
        raise MintRefused("scope", "A new key may only carry scopes the caller holds.")
    plan = plan or minter.plan
    if not _plan_allowed(minter, plan, settings):
        raise MintRefused("plan", "A new key's plan may not allow more than the caller's own.")
    latest = _latest(minter, minter_ends_at, now, max_lifetime)
    if expires_at is None:
        expires_at = latest
    elif expires_at > latest:
        raise MintRefused(
            "expiry",
            "A new key may not outlive the caller's own credential, nor the account's "
            "longest key lifetime.",
        )
    return KeyTerms(scopes, plan, expires_at)


def rotated_key_terms(
    minter: Principal,
    *,
    old_scopes: frozenset[str],
    old_plan: str,
    old_expires_at: datetime | None,
    expires_at: datetime | None,
    minter_ends_at: datetime | None,
    now: datetime,
    max_lifetime: timedelta,
    settings: PlanSettings,
) -> KeyTerms:
    """The terms of the key replacing one whose scopes, plan and expiry are ``old_*``."""
    if ADMIN not in minter.scopes and not old_scopes <= minter.scopes:
        raise MintRefused("scope", "A key may only be rotated by a caller holding its scopes.")
    if not _plan_allowed(minter, old_plan, settings):
        raise MintRefused(
            "plan", "A key may only be rotated by a caller whose plan allows as much."
        )
    latest = _latest(minter, minter_ends_at, now, max_lifetime)
    if old_expires_at is not None:
        latest = min(latest, old_expires_at)
    if expires_at is None:
        expires_at = latest
    elif expires_at > latest:
        raise MintRefused(
            "expiry",
            "A rotated key may only expire earlier than the key it replaces, the caller's "
            "own credential and the account's longest key lifetime.",
        )
    return KeyTerms(old_scopes, old_plan, expires_at)
