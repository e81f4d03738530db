"""Partner self-service for API keys (OWASP API1:2023, object-level authorization).

A caller sees and changes only keys of its own account; another account's key id
answers exactly like a key id that does not exist (404, same body), so ids reveal
nothing. ``admin`` callers act on any key. Every change goes to the audit log
(the store writes it).

Nothing minted outranks its minter (``auth.minting``, OWASP API3/API6): a new or
rotated key carries only scopes the caller holds, a plan no higher than the caller's
own credential's, and an expiry no later than the caller's own key's end nor than
API_KEY_MAX_LIFETIME_DAYS from now (a key asked for without one gets that bound). An
account holds at most MAX_KEYS_PER_ACCOUNT active keys (409 past it), and every key of
it spends the account's one prediction budget, so minting gains nothing.

The routes are sync: FastAPI runs them, and SlowAPI's limit check in front of them, in
its threadpool, so neither the store nor Redis is ever called on the event loop.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field, field_validator

from app.deps import KeyManager, StoreDep, require_json
from app.errors import ApiError, NotFound
from app.json_body import JsonRoute
from app.limits import QuotaLimiter, caller_key, predict_limit
from app.openapi import problems
from app.schemas import StrictModel, whole_number
from app.settings import Settings
from auth.errors import InvalidValueError, KeyLimitError
from auth.minting import MintRefused, new_key_terms, rotated_key_terms
from auth.principal import Principal
from auth.scopes import ADMIN, UnknownScopeError, format_scopes, parse_scopes
from auth.store import DEFAULT_PLAN, ApiKeyRecord, CredentialStore

KEY_ID = re.compile(r"[a-z2-7]{12}")


class ScopeNotHeld(ApiError):
    status, slug, title = 403, "scope-not-held", "Forbidden"


class OutranksCaller(ApiError):
    status, slug, title = 403, "outranks-caller", "Forbidden"


class KeyLimitReached(ApiError):
    status, slug, title = 409, "key-limit-reached", "Conflict"


def _refused(refusal: MintRefused) -> ApiError:
    if refusal.what == "scope":
        return ScopeNotHeld(refusal.message)
    return OutranksCaller(refusal.message)


class KeyInfo(BaseModel):
    key_id: str
    prefix: str = Field(description="What the key starts with, to recognise it.")
    owner: str
    scopes: str
    plan: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    grace_until: datetime | None = Field(description="Rotated: works until then.")
    revoked_at: datetime | None
    status: str


class KeyList(BaseModel):
    keys: list[KeyInfo]


class NewKey(BaseModel):
    key_id: str
    api_key: str = Field(description="Shown once; store it now.")
    scopes: str
    plan: str
    expires_at: datetime | None


class Rotated(NewKey):
    previous_key_id: str
    previous_key_valid_until: datetime


MAX_DAYS = 3650  # API_KEY_MAX_LIFETIME_DAYS' own bound; the setting refuses more (403)


class CreateKey(StrictModel):
    scopes: str = Field(description="Space-separated; a subset of the caller's scopes.")
    expires_in_days: int | None = Field(
        default=None,
        ge=1,
        le=MAX_DAYS,
        description="Omitted: API_KEY_MAX_LIFETIME_DAYS, or the caller's own key's expiry "
        "if sooner. Never later than either.",
    )
    plan: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$",
        description="Omitted: the caller's own plan. Never one allowing more than it.",
    )

    @field_validator("expires_in_days", mode="before")
    @classmethod
    def _whole_days(cls, value: object) -> object:
        return whole_number(value)


class RotateKey(StrictModel):
    grace_seconds: int = Field(
        default=3600, ge=0, description="How long the old key keeps working (capped)."
    )
    expires_in_days: int | None = Field(
        default=None,
        ge=1,
        le=MAX_DAYS,
        description="Omitted: the old key's expiry (cut to the caller's own key's and to "
        "API_KEY_MAX_LIFETIME_DAYS). Only earlier, never later.",
    )

    @field_validator("grace_seconds", "expires_in_days", mode="before")
    @classmethod
    def _whole_numbers(cls, value: object) -> object:
        return whole_number(value)


def _owner(principal: Principal) -> str | None:
    """Whose keys this caller manages: its account's; None (any) for admins."""
    if ADMIN in principal.scopes:
        return None
    return principal.account or principal.id


def _minter_ends_at(principal: Principal, store: CredentialStore) -> datetime | None:
    """When the caller's own credential stops working: a key's expiry or grace, read
    afresh (it may have been rotated since it was verified); a token's subject has none."""
    if principal.kind != "api_key":
        return None
    record = store.api_keys.get(principal.subject)
    if record is None or record.unusable_reason(datetime.now(UTC)) is not None:
        raise NotFound(NOT_FOUND)  # revoked or rotated out between authentication and now
    return record.ends_at


def _info(record: ApiKeyRecord, now: datetime) -> KeyInfo:
    return KeyInfo(
        key_id=record.key_id,
        prefix=f"hpa_{record.key_id}_",
        owner=record.owner,
        scopes=format_scopes(record.scopes),
        plan=record.plan,
        created_at=record.created_at,
        expires_at=record.expires_at,
        last_used_at=record.last_used_at,
        grace_until=record.grace_until,
        revoked_at=record.revoked_at,
        status=record.unusable_reason(now) or "active",
    )


NOT_FOUND = "No such key."  # the same words for a missing key and another account's


def _known_shape(key_id: str) -> str:
    """A malformed id is just another id that does not exist: 404, nothing more."""
    if not KEY_ID.fullmatch(key_id):
        raise NotFound(NOT_FOUND)
    return key_id


def build_router(limiter: QuotaLimiter, settings: Settings) -> APIRouter:
    router = APIRouter(
        prefix="/v1/keys",
        tags=["keys"],
        route_class=JsonRoute,  # UTF-8 JSON only
        responses=problems(401, 403, 404, 422, 429, 503),
    )
    max_lifetime = timedelta(days=settings.api_key_max_lifetime_days)
    plans = {DEFAULT_PLAN, *settings.rate_limit_plans}
    quota = limiter.shared_limit(predict_limit(settings), scope="keys", key_func=caller_key)

    @router.get("", summary="List the caller's own API keys")
    @quota
    def list_keys(
        request: Request, response: Response, caller: KeyManager, store: StoreDep
    ) -> KeyList:
        records = store.api_keys.list(_owner(caller))
        now = datetime.now(UTC)
        return KeyList(keys=[_info(r, now) for r in records])

    @router.post(
        "",
        summary="Create a key that does not outrank the caller",
        status_code=201,
        responses=problems(400, 408, 409, 413, 415),
        dependencies=[Depends(require_json)],
    )
    @quota
    def create_key(
        request: Request, body: CreateKey, caller: KeyManager, store: StoreDep, response: Response
    ) -> NewKey:
        try:
            scopes = parse_scopes(body.scopes)
        except UnknownScopeError:
            raise ScopeNotHeld("A new key may only carry scopes the caller holds.") from None
        if body.plan is not None and body.plan not in plans:
            raise OutranksCaller(
                f"A new key's plan is one of {', '.join(sorted(plans))}, "
                "and none that allows more than the caller's own."
            )
        now = datetime.now(UTC)
        ends_at = _minter_ends_at(caller, store)
        try:
            terms = new_key_terms(
                caller,
                scopes=scopes,
                plan=body.plan,
                expires_at=now + timedelta(days=body.expires_in_days)
                if body.expires_in_days
                else None,
                minter_ends_at=ends_at,
                now=now,
                max_lifetime=max_lifetime,
                settings=settings,
            )
        except MintRefused as refusal:
            raise _refused(refusal) from None
        try:
            key_id, api_key = store.api_keys.create(
                caller.account or caller.id,
                terms.scopes,
                terms.plan,
                expires_at=terms.expires_at,
                created_by=caller.id,
                max_active=settings.max_keys_per_account,
            )
        except KeyLimitError as exc:
            raise KeyLimitReached(
                f"An account may hold at most {exc.limit} active API keys; revoke one first."
            ) from None
        except InvalidValueError:  # the account was disabled meanwhile
            raise NotFound(NOT_FOUND) from None
        response.headers["Cache-Control"] = "no-store"
        return NewKey(
            key_id=key_id,
            api_key=api_key,
            scopes=format_scopes(terms.scopes),
            plan=terms.plan,
            expires_at=terms.expires_at,
        )

    @router.post(
        "/{key_id}/rotate",
        summary="Rotate a key: a new one now, the old one for a grace",
        responses=problems(400, 408, 413),
    )
    @quota
    def rotate_key(
        request: Request,
        key_id: str,
        caller: KeyManager,
        store: StoreDep,
        response: Response,
        body: RotateKey | None = None,
    ) -> Rotated:
        _known_shape(key_id)
        asked = body or RotateKey()
        grace = timedelta(seconds=min(asked.grace_seconds, settings.key_rotation_max_grace_seconds))
        owner = _owner(caller)
        old_key = store.api_keys.get(key_id, owner=owner)
        now = datetime.now(UTC)
        # Missing, another account's, or not rotatable (revoked, expired, rotated): one 404.
        if old_key is None or old_key.grace_until is not None or old_key.unusable_reason(now):
            raise NotFound(NOT_FOUND)
        ends_at = _minter_ends_at(caller, store)
        try:
            terms = rotated_key_terms(
                caller,
                old_scopes=old_key.scopes,
                old_plan=old_key.plan,
                old_expires_at=old_key.expires_at,
                expires_at=now + timedelta(days=asked.expires_in_days)
                if asked.expires_in_days
                else None,
                minter_ends_at=ends_at,
                now=now,
                max_lifetime=max_lifetime,
                settings=settings,
            )
        except MintRefused as refusal:
            raise _refused(refusal) from None
        rotated = store.api_keys.rotate(
            key_id, actor=caller.id, owner=owner, grace=grace, not_after=terms.expires_at
        )
        if rotated is None:
            raise NotFound(NOT_FOUND)
        new_id, api_key = rotated
        old = store.api_keys.get(key_id)
        new = store.api_keys.get(new_id)
        if old is None or old.grace_until is None or new is None:  # changed meanwhile
            raise NotFound(NOT_FOUND)
        response.headers["Cache-Control"] = "no-store"
        return Rotated(
            key_id=new_id,
            api_key=api_key,
            scopes=format_scopes(new.scopes),
            plan=new.plan,
            expires_at=new.expires_at,
            previous_key_id=key_id,
            previous_key_valid_until=old.grace_until,
        )

    @router.delete("/{key_id}", summary="Revoke a key", status_code=204)
    @quota
    def revoke_key(request: Request, key_id: str, caller: KeyManager, store: StoreDep) -> Response:
        _known_shape(key_id)
        owner = _owner(caller)
        revoked = store.api_keys.revoke(key_id, caller.id, owner=owner)
        if not revoked:
            raise NotFound(NOT_FOUND)
        return Response(status_code=204)

    return router
