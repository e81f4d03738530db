"""Dependencies that read like types: a route's signature lists what it needs.

Who is calling, with what permission: one alias per permission (an endpoint without
one is public, which keeps the public surface easy to audit). What the app built:
one alias per part of :class:`app.state.Services`.

``async def`` although they never await: FastAPI runs a plain ``def`` dependency in
its threadpool, and a thread hand-off per dependency costs far more than these reads.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security

from app.errors import UnsupportedMediaType
from app.json_body import JSON_ONLY, is_json_media_type
from app.reload import ModelReloader
from app.security import api_key_scheme, authenticate, oauth2_scheme
from app.settings import Settings
from app.state import Services, services
from auth import scopes as S
from auth.jwt_keys import SigningKeys
from auth.oauth import OAuthServer
from auth.principal import Principal
from auth.store import CredentialStore
from ml.artifacts import LoadedModel

# -- who is calling -------------------------------------------------------------------

Predictor = Annotated[Principal, Security(authenticate, scopes=[S.PREDICT])]
# Either scope is enough: a caller allowed to predict may see what answers it.
ModelReader = Annotated[Principal, Security(authenticate, scopes=[S.MODELS_READ, S.PREDICT])]
MetricsReader = Annotated[Principal, Security(authenticate, scopes=[S.METRICS])]
KeyManager = Annotated[Principal, Security(authenticate, scopes=[S.KEYS_MANAGE])]
Admin = Annotated[Principal, Security(authenticate, scopes=[S.ADMIN])]
Authenticated = Annotated[Principal, Security(authenticate)]

# For routers whose every operation needs the permission before its body is looked at.
# ``Predictor``'s requirement, for the OpenAPI document only: the routes behind the guard
# layer (``app.guard``), which decided who is calling before FastAPI runs, declare it so
# and solve no dependency for it.
PREDICTOR_SECURITY = {
    "security": [
        {oauth2_scheme.scheme_name: [S.PREDICT]},
        {api_key_scheme.scheme_name: [S.PREDICT]},
    ]
}

# -- what the app built -----------------------------------------------------------------


async def _services(request: Request) -> Services:
    return services(request)


async def _settings(request: Request) -> Settings:
    return services(request).settings


async def _models(request: Request) -> dict[str, LoadedModel]:
    return services(request).models


async def _store(request: Request) -> CredentialStore:
    return services(request).store


async def _signing_keys(request: Request) -> SigningKeys:
    return services(request).signing_keys


async def _oauth(request: Request) -> OAuthServer:
    return services(request).oauth


async def _reloader(request: Request) -> ModelReloader:
    return services(request).reloader


ServicesDep = Annotated[Services, Depends(_services)]
SettingsDep = Annotated[Settings, Depends(_settings)]
ModelsDep = Annotated[dict[str, LoadedModel], Depends(_models)]
StoreDep = Annotated[CredentialStore, Depends(_store)]
SigningKeysDep = Annotated[SigningKeys, Depends(_signing_keys)]
ReloaderDep = Annotated[ModelReloader, Depends(_reloader)]
OAuthDep = Annotated[OAuthServer, Depends(_oauth)]


async def require_json(request: Request) -> None:
    """415 unless the body is declared ``application/json`` (or a ``+json`` type)."""
    if not is_json_media_type(request.headers.get("content-type", "")):
        raise UnsupportedMediaType(JSON_ONLY)
