"""What the app says on the wire about itself: UTF-8 JSON only, no Host-built
redirects, Server-Timing only where it is asked for, no Server header.

In process; tests/accounts/test_accounts_http.py checks the same against real
``serve --workers 2`` processes.
"""

from __future__ import annotations

import codecs
import json
import secrets
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from fastapi import FastAPI

from app.main import create_app
from app.settings import Settings
from tests.support.houses import V1_HOUSE, V2_HOUSE

pytestmark = pytest.mark.anyio

# Every way to send a JSON text that is not UTF-8 as RFC 8259 §8.1 wants it.
ENCODINGS: dict[str, Callable[[str], bytes]] = {
    "utf-8 with BOM": lambda text: codecs.BOM_UTF8 + text.encode("utf-8"),
    "utf-16-le": lambda text: text.encode("utf-16-le"),
    "utf-16-be": lambda text: text.encode("utf-16-be"),
    "utf-16 with BOM": lambda text: text.encode("utf-16"),
    "utf-32-le": lambda text: text.encode("utf-32-le"),
    "utf-32-be": lambda text: text.encode("utf-32-be"),
    "utf-32 with BOM": lambda text: text.encode("utf-32"),
    "latin-1": lambda text: text.replace("}", ', "x": "\u00e9"}').encode("latin-1"),
}


@pytest.fixture
async def app(make_settings: Callable[..., Settings]) -> AsyncIterator[FastAPI]:
    application = create_app(make_settings())
    async with application.router.lifespan_context(application):
        yield application


def as_key(app: FastAPI, scopes: str = "predict keys:manage") -> httpx.AsyncClient:
    _, api_key = app.state.services.store.api_keys.create("wire", scopes)
    transport = httpx.ASGITransport(app=app, client=("192.0.2.60", 6000))
    return httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers={"X-API-Key": api_key}
    )


async def test_json_that_is_not_utf8_is_a_400_problem_on_every_json_route(
    app: FastAPI, subtests: pytest.Subtests
) -> None:
    async with as_key(app) as client:
        created = await client.post("/v1/keys", json={"scopes": "predict"})
        assert created.status_code == 201
        rotate = f"/v1/keys/{created.json()['key_id']}/rotate"
        bodies = {
            "/v1/predict": V1_HOUSE,
            "/v2/predict": V2_HOUSE,
            "/v1/predict/batch": {"instances": [V1_HOUSE]},
            "/v2/predict/batch": {"instances": [V2_HOUSE]},
            "/v1/keys": {"scopes": "predict"},
            rotate: {"grace_seconds": 60},
        }
        for path, body in bodies.items():
            text = json.dumps(body)
            for name, encode in ENCODINGS.items():
                with subtests.test(path=path, encoding=name):
                    answer = await client.post(
                        path, content=encode(text), headers={"Content-Type": "application/json"}
                    )
                    assert answer.status_code == 400, answer.text
                    assert answer.headers["content-type"] == "application/problem+json"
                    problem = answer.json()
                    assert problem["type"] == "urn:housing-api:problem:json-not-utf8"
                    assert "UTF-8" in problem["detail"]
        # The control: the same documents in UTF-8 are answered.
        for path in ("/v1/predict", "/v2/predict/batch"):
            answer = await client.post(
                path,
                content=json.dumps(bodies[path], ensure_ascii=False).encode("utf-8"),
                headers={"Content-Type": "application/json"},
            )
            assert answer.status_code == 200, answer.text


async def test_every_json_route_declares_the_400(app: FastAPI) -> None:
    paths = app.openapi()["paths"]
    for path in ("/v1/predict", "/v2/predict", "/v1/predict/batch", "/v2/predict/batch"):
        assert "400" in paths[path]["post"]["responses"], path
    assert "400" in paths["/v1/keys"]["post"]["responses"]
    assert "409" in paths["/v1/keys"]["post"]["responses"]
    assert "400" in paths["/v1/keys/{key_id}/rotate"]["post"]["responses"]


async def test_a_trailing_slash_is_a_404_never_a_redirect_built_from_host(app: FastAPI) -> None:
    async with as_key(app) as client:
        for method, path in (
            ("GET", "/v1/model/"),
            ("POST", "/v1/predict/"),
            ("GET", "/v1/keys/"),
            ("GET", "/healthz/"),
        ):
            answer = await client.request(
                method, path, headers={"Host": "attacker.example"}, json=V1_HOUSE
            )
            assert answer.status_code == 404, (path, answer.status_code)
            assert "location" not in answer.headers
            assert "attacker.example" not in answer.text
            assert answer.headers["content-type"] == "application/problem+json"


async def test_server_timing_only_in_development_or_when_enabled(
    make_settings: Callable[..., Settings],
) -> None:
    production = {
        "app_env": "production",
        "jwt_secret_key": secrets.token_urlsafe(48),
        "api_key_pepper": secrets.token_urlsafe(48),
    }
    expectations = [
        (make_settings(), True),
        (make_settings(**production), False),
        (make_settings(**production, server_timing_enabled=True), True),
    ]
    for settings, expected in expectations:
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, client=("192.0.2.61", 6001))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                answers = [await client.get("/healthz"), await client.get("/nowhere")]
        for answer in answers:
            assert ("server-timing" in answer.headers) is expected, settings.app_env
            assert "server" not in answer.headers
            assert answer.headers["X-Request-ID"]
