"""Partner self-service for API keys (OWASP API1:2023, object-level authorization).

A caller sees and changes only keys of its own owner; another owner's key id
answers exactly like a key id that does not exist (404, same body), so ids reveal
nothing. ``admin`` callers act on any key. Every change goes to the audit log
(the store writes it). Scopes can only shrink: a new key takes a subset of the
caller's scopes, and a rotated key keeps the old key's.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field, field_validator
from starlette.concurrency import run_in_threadpool

from app.deps import KeyManager, SettingsDep, StoreDep, require_json
from app.errors import ApiError, NotFound
from app.limits import QuotaLimiter, caller_key, predict_limit
from app.openapi import problems
from app.schemas import StrictModel, whole_number
from app.settings import Settings
from auth.principal import Principal
from auth.scopes import ADMIN, UnknownScopeError, format_scopes, parse_scopes
from auth.store import ApiKeyRecord, CredentialStore

KEY_ID = re.compile(r"[a-z2-7]{12}")


class ScopeNotHeld(ApiError):
    status, slug, title = 403, "scope-not-held", "Forbidden"


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
    expires_at: datetime | None


class Rotated(NewKey):
    previous_key_id: str
    previous_key_valid_until: datetime


class CreateKey(StrictModel):
    scopes: str = Field(description="Space-separated; a subset of the caller's scopes.")
    expires_in_days: int | None = Field(default=None, ge=1, le=365)

    @field_validator("expires_in_days", mode="before")
    @classmethod
    def _whole_days(cls, value: object) -> object:
        return whole_number(value)


class RotateKey(StrictModel):
    grace_seconds: int = Field(
        default=3600, ge=0, description="How long the old key keeps working (capped)."
    )

    @field_validator("grace_seconds", mode="before")
    @classmethod
    def _whole_seconds(cls, value: object) -> object:
        return whole_number(value)


def _owner(principal: Principal, store: CredentialStore) -> str | None:
    """Whose keys this caller manages: None (any) for admins."""
    if ADMIN in principal.scopes:
        return None
    if principal.kind == "api_key":
        record = store.api_keys.get(principal.subject)
        if record is None:  # revoked between authentication and now
            raise NotFound("No such key.")
        return record.owner
    if principal.kind == "client":
        client = store.clients.get(principal.subject)
        return client.name if client is not None and client.name else principal.subject
    return principal.subject


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


NOT_FOUND = "No such key."  # the same words for a missing key and another owner's


def _known_shape(key_id: str) -> str:
    """A malformed id is just another id that does not exist: 404, nothing more."""
    if not KEY_ID.fullmatch(key_id):
        raise NotFound(NOT_FOUND)
    return key_id


def build_router(limiter: QuotaLimiter, settings: Settings) -> APIRouter:
    router = APIRouter(
        prefix="/v1/keys", tags=["keys"], responses=problems(401, 403, 404, 422, 429, 503)
    )
    quota = limiter.shared_limit(predict_limit(settings), scope="keys", key_func=caller_key)

    @router.get("", summary="List the caller's own API keys")
    @quota
    async def list_keys(
        request: Request, response: Response, caller: KeyManager, store: StoreDep
    ) -> KeyList:
        owner = await run_in_threadpool(_owner, caller, store)
        records = await run_in_threadpool(store.api_keys.list, owner)
        now = datetime.now(UTC)
        return KeyList(keys=[_info(r, now) for r in records])

    @router.post(
        "",
        summary="Create a key with a subset of the caller's scopes",
        status_code=201,
        responses=problems(408, 413, 415),
        dependencies=[Depends(require_json)],
    )
    @quota
    async def create_key(
        request: Request, body: CreateKey, caller: KeyManager, store: StoreDep, response: Response
    ) -> NewKey:
        try:
            scopes = parse_scopes(body.scopes)
        except UnknownScopeError as exc:
            raise ScopeNotHeld(str(exc)) from None
        if not scopes or not scopes <= caller.scopes:
            raise ScopeNotHeld("A new key may only carry scopes the caller holds.")
        owner = await run_in_threadpool(_owner, caller, store)
        expires_at = (
            datetime.now(UTC) + timedelta(days=body.expires_in_days)
            if body.expires_in_days
            else None
        )
        key_id, api_key = await run_in_threadpool(
            lambda: store.api_keys.create(
                owner or caller.id,
                scopes,
                caller.plan,
                expires_at=expires_at,
                created_by=caller.id,
            )
        )
        response.headers["Cache-Control"] = "no-store"
        return NewKey(
            key_id=key_id, api_key=api_key, scopes=format_scopes(scopes), expires_at=expires_at
        )

    @router.post(
        "/{key_id}/rotate",
        summary="Rotate a key: a new one now, the old one for a grace",
        responses=problems(408, 413),
    )
    @quota
    async def rotate_key(
        request: Request,
        key_id: str,
        caller: KeyManager,
        store: StoreDep,
        settings: SettingsDep,
        response: Response,
        body: RotateKey | None = None,
    ) -> Rotated:
        _known_shape(key_id)
        grace = timedelta(
            seconds=min(
                (body or RotateKey()).grace_seconds, settings.key_rotation_max_grace_seconds
            )
        )
        owner = await run_in_threadpool(_owner, caller, store)
        rotated = await run_in_threadpool(
            lambda: store.api_keys.rotate(key_id, actor=caller.id, owner=owner, grace=grace)
        )
        if rotated is None:
            raise NotFound(NOT_FOUND)
        new_id, api_key = rotated
        old = await run_in_threadpool(store.api_keys.get, key_id)
        new = await run_in_threadpool(store.api_keys.get, new_id)
        if old is None or old.grace_until is None or new is None:  # changed meanwhile
            raise NotFound(NOT_FOUND)
        response.headers["Cache-Control"] = "no-store"
        return Rotated(
            key_id=new_id,
            api_key=api_key,
            scopes=format_scopes(new.scopes),
            expires_at=new.expires_at,
            previous_key_id=key_id,
            previous_key_valid_until=old.grace_until,
        )

    @router.delete("/{key_id}", summary="Revoke a key", status_code=204)
    @quota
    async def revoke_key(
        request: Request, key_id: str, caller: KeyManager, store: StoreDep
    ) -> Response:
        _known_shape(key_id)
        owner = await run_in_threadpool(_owner, caller, store)
        revoked = await run_in_threadpool(
            lambda: store.api_keys.revoke(key_id, caller.id, owner=owner)
        )
        if not revoked:
            raise NotFound(NOT_FOUND)
        return Response(status_code=204)

    return router
