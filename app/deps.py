"""Dependencies that read like types: a route's signature lists what it needs.

``async def`` although they never await: FastAPI runs a plain ``def`` dependency in
its threadpool, and a thread hand-off per dependency costs far more than these reads.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.errors import UnsupportedMediaType
from app.settings import Settings
from ml.artifacts import LoadedModel


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_models(request: Request) -> dict[str, LoadedModel]:
    models: dict[str, LoadedModel] = request.app.state.models
    return models


SettingsDep = Annotated[Settings, Depends(get_settings)]
ModelsDep = Annotated[dict[str, LoadedModel], Depends(get_models)]


async def require_json(request: Request) -> None:
    """415 unless the body is declared ``application/json`` (or a ``+json`` type)."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        raise UnsupportedMediaType("Send the request body as application/json.")
