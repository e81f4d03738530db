"""What schemathesis found, pinned as plain examples (see SECURITY.md, verification).

Each was a place where the app answered something its OpenAPI document did not say:
a status code, a header, or a refusal of data the schema calls valid.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from app.main import create_app
from tests.security.conftest import ALL_SCOPES_TEXT, security_settings
from tests.support import openapi
from tests.support.houses import V1_HOUSE

pytestmark = pytest.mark.anyio

HOUSE = V1_HOUSE


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def app(
    clean_environment: None, tmp_path_factory: pytest.TempPathFactory, trained_model_dir: Path
) -> AsyncIterator[FastAPI]:
    base = tmp_path_factory.mktemp("conformance")
    application = create_app(security_settings(base, trained_model_dir))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    _, api_key = app.state.services.store.api_keys.create("conformance", ALL_SCOPES_TEXT)
    transport = httpx.ASGITransport(app=app, client=("192.0.2.44", 4000))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers={"X-API-Key": api_key}
    ) as http:
        yield http


async def test_a_body_that_is_not_utf8_is_a_400_problem_declared_by_openapi(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """FastAPI answered 400 for undecodable bytes, 422 for bad JSON. The contract now
    says JSON is UTF-8 only (RFC 8259 §8.1): any body that is not is a 400 problem,
    before validation, and the OpenAPI document declares it."""
    for body in (b"\xc3\x28", b'{"lotsize": "\xff"}'):
        response = await client.post(
            "/v1/predict", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"] == "urn:housing-api:problem:json-not-utf8"
        assert "\ufffd" not in response.text
    declared = app.openapi()["paths"]["/v1/predict"]["post"]["responses"]
    assert "400" in declared


async def test_405_names_every_method_of_the_path(client: httpx.AsyncClient) -> None:
    """Starlette's Allow named only the first route matching /v1/keys (GET, not POST)."""
    expected = {"/v1/keys": "GET, POST", "/v1/keys/abcdefghijkl": "DELETE", "/v1/predict": "POST"}
    for path, allow in expected.items():
        response = await client.request("PUT", path)
        assert response.status_code == 405
        assert response.headers["allow"] == allow
        assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("count", [3.0, 0.0, 9.0])
async def test_a_whole_number_written_as_a_float_is_the_integer(
    client: httpx.AsyncClient, count: float
) -> None:
    """JSON Schema's "integer" admits 3.0; so does the API. 2.5 and "3" still do not."""
    answer = await client.post("/v1/predict", json=HOUSE | {"bedrooms": count})
    assert answer.status_code == 200, answer.text
    exact = await client.post("/v1/predict", json=HOUSE | {"bedrooms": int(count)})
    assert answer.json()["predicted_price"] == exact.json()["predicted_price"]
    for refused in (2.5, "3", True):
        response = await client.post("/v1/predict", json=HOUSE | {"bedrooms": refused})
        assert response.status_code == 422, refused


async def test_key_routes_accept_whole_number_floats_too(client: httpx.AsyncClient) -> None:
    created = await client.post("/v1/keys", json={"scopes": "predict", "expires_in_days": 30.0})
    assert created.status_code == 201, created.text
    rotated = await client.post(
        f"/v1/keys/{created.json()['key_id']}/rotate", json={"grace_seconds": 60.0}
    )
    assert rotated.status_code == 200, rotated.text


async def test_oauth_ignores_unknown_parameters_even_repeated(app: FastAPI) -> None:
    """RFC 6749 §3.1: unrecognized parameters are ignored; only known ones may not repeat."""
    client_id, secret = app.state.services.store.clients.create("conformance", "predict")
    transport = httpx.ASGITransport(app=app, client=("192.0.2.45", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        answer = await http.post(
            "/token",
            content=b"grant_type=client_credentials&x=1&x=2&=3&%F0%9F%94%91=4",
            headers={"content-type": "application/x-www-form-urlencoded"},
            auth=(client_id, secret),
        )
        assert answer.status_code == 200, answer.text
        repeated = await http.post(
            "/token",
            content=b"grant_type=client_credentials&scope=predict&scope=predict",
            headers={"content-type": "application/x-www-form-urlencoded"},
            auth=(client_id, secret),
        )
    assert repeated.status_code == 400
    assert repeated.json()["error"] == "invalid_request"


async def test_oversized_forms_get_the_declared_problem_answer(app: FastAPI) -> None:
    """The body guard's 413 is a problem document on /token too, as the document says.
    (A streamed form trips the form parser's field limits first: invalid_request.)"""
    transport = httpx.ASGITransport(app=app, client=("192.0.2.46", 4000))
    body = b"grant_type=client_credentials&x=" + b"a" * app.state.services.settings.max_body_bytes
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        response = await http.post(
            "/token", content=body, headers={"content-type": "application/x-www-form-urlencoded"}
        )
        spec = (await http.get("/openapi.json")).json()
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    declared = openapi.response(spec, "/token", "post", "413")["content"]
    assert "application/problem+json" in declared


@pytest.mark.parametrize("path", ["/token", "/revoke"])
async def test_a_form_with_too_many_fields_is_an_oauth_error(
    client: httpx.AsyncClient, path: str
) -> None:
    """Starlette refuses forms over 20 fields with its own 400; here it is RFC 6749's."""
    body = "grant_type=client_credentials&" + "&".join(f"x{i}=1" for i in range(30))
    answer = await client.post(
        path, content=body, headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert answer.status_code == 400
    assert answer.headers["content-type"] == "application/json"
    assert answer.json()["error"] == "invalid_request"
