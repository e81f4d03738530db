"""What the service publishes about its identity: the JWK Set and the OpenAPI schemes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from jose import jwt

from app.main import create_app
from app.settings import Settings
from tests.auth_http.support import NewClient, b64url_decode_json, get_token
from tests.support import openapi

pytestmark = pytest.mark.anyio

PRIVATE_JWK_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k", "oth"}


@pytest.mark.parametrize("algorithm", ["HS256"])
async def test_jwks_is_empty_for_hs256(client: httpx.AsyncClient) -> None:
    response = await client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.json() == {"keys": []}


@pytest.mark.parametrize("algorithm", ["ES256"])
async def test_jwks_publishes_one_public_es256_key(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings, new_client: NewClient
) -> None:
    response = await client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    keys: list[dict[str, Any]] = response.json()["keys"]
    assert len(keys) == 1
    [key] = keys
    assert key["kid"] == app.state.services.signing_keys.kid
    assert {"kty": "EC", "crv": "P-256", "alg": "ES256"}.items() <= key.items()
    assert not PRIVATE_JWK_MEMBERS & key.keys()
    # A third party can check our tokens with nothing but the published key.
    client_id, secret = new_client("predict")
    token = await get_token(client, client_id, secret)
    assert b64url_decode_json(token.split(".")[0])["kid"] == key["kid"]
    claims = jwt.decode(
        token, key, algorithms=["ES256"], audience=settings.jwt_audience, issuer=settings.jwt_issuer
    )
    assert claims["client_id"] == client_id


@pytest.mark.parametrize("password_grant", [False, True])
async def test_openapi_declares_both_security_schemes(
    make_settings: Callable[..., Settings], password_grant: bool
) -> None:
    """The password flow and ``grant_type=password`` are shown only when the grant is on."""
    app = create_app(make_settings("HS256", password_grant_enabled=password_grant))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    schemes: dict[str, dict[str, Any]] = document["components"]["securitySchemes"]

    oauth = {name: s for name, s in schemes.items() if s["type"] == "oauth2"}
    assert len(oauth) == 1
    [(oauth_name, oauth_scheme)] = oauth.items()
    flows = oauth_scheme["flows"]
    expected = {"clientCredentials", "password"} if password_grant else {"clientCredentials"}
    assert flows.keys() == expected
    for flow in expected:
        assert flows[flow]["tokenUrl"].endswith("/token")
        assert "predict" in flows[flow]["scopes"]
    form = document["paths"]["/token"]["post"]["requestBody"]["content"]
    grant_types = form["application/x-www-form-urlencoded"]["schema"]["properties"]["grant_type"]
    assert ("password" in grant_types["enum"]) is password_grant

    api_keys = {name: s for name, s in schemes.items() if s["type"] == "apiKey"}
    assert len(api_keys) == 1
    [(key_name, key_scheme)] = api_keys.items()
    assert key_scheme["in"] == "header"
    assert key_scheme["name"].lower() == "x-api-key"

    for path in ("/v1/predict", "/v1/predict/batch", "/v2/predict", "/v2/predict/batch"):
        security: list[dict[str, list[str]]] = document["paths"][path]["post"]["security"]
        named = {name for requirement in security for name in requirement}
        assert {oauth_name, key_name} <= named, (path, security)
        oauth_requirement = next(r for r in security if oauth_name in r)
        assert "predict" in oauth_requirement[oauth_name]
        responses = document["paths"][path]["post"]["responses"]
        assert {"401", "403"} <= responses.keys()
        unauthorized = openapi.response(document, path, "post", "401")
        assert "application/problem+json" in unauthorized["content"]


@pytest.mark.parametrize("algorithm", ["HS256"])
async def test_docs_and_discovery_need_no_credentials(client: httpx.AsyncClient) -> None:
    for path in ("/docs", "/openapi.json", "/.well-known/jwks.json"):
        response = await client.get(path)
        assert response.status_code == 200, path
