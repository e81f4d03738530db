"""``POST /token`` with ``client_credentials``: RFC 6749 §2.3.1, §3.3, §4.4 and §5.2."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import httpx
import pytest
from fastapi import FastAPI

from app.main import create_app
from app.settings import Settings
from auth.store import CredentialStore
from auth.tokens import decode_access_token
from tests.auth_http.conftest import open_client
from tests.auth_http.support import (
    NewClient,
    assert_oauth_error,
    b64url_decode_json,
    bearer,
    predict,
    request_token,
)

pytestmark = pytest.mark.anyio

FORM = {"content-type": "application/x-www-form-urlencoded"}


def percent_encode_all(text: str) -> str:
    """Every byte as ``%XX``: a legal form-urlencoding a server must decode back."""
    return "".join(f"%{byte:02X}" for byte in text.encode())


def basic(user: str, password: str) -> dict[str, str]:
    raw = f"{user}:{password}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode("ascii")}


def assert_token_answer(response: httpx.Response, settings: Settings, scope: str) -> str:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert "no-store" in response.headers["cache-control"]
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == settings.access_token_ttl_seconds
    assert isinstance(body["expires_in"], int)
    assert body["scope"] == scope
    token: str = body["access_token"]
    header = b64url_decode_json(token.split(".")[0])
    assert header["alg"] == settings.jwt_algorithm
    return token


async def test_client_secret_post_issues_a_working_token(
    client: httpx.AsyncClient, settings: Settings, new_client: NewClient
) -> None:
    client_id, secret = new_client("predict models:read")
    response = await client.post(
        "/token",
        data={
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": secret,
        },
    )
    token = assert_token_answer(response, settings, "models:read predict")
    assert secret not in response.text
    assert (await predict(client, bearer(token))).status_code == 200


async def test_client_secret_basic_issues_a_working_token(
    client: httpx.AsyncClient, settings: Settings, new_client: NewClient
) -> None:
    client_id, secret = new_client("predict")
    response = await client.post(
        "/token", data={"grant_type": "client_credentials"}, headers=basic(client_id, secret)
    )
    token = assert_token_answer(response, settings, "predict")
    assert (await predict(client, bearer(token))).status_code == 200


async def test_basic_credentials_are_form_urlencoded(
    client: httpx.AsyncClient, settings: Settings, new_client: NewClient
) -> None:
    """RFC 6749 §2.3.1: id and secret are form-urlencoded before Basic encoding."""
    client_id, secret = new_client("predict")
    headers = basic(percent_encode_all(client_id), percent_encode_all(secret))
    response = await client.post(
        "/token", data={"grant_type": "client_credentials"}, headers=headers
    )
    assert_token_answer(response, settings, "predict")


async def test_basic_credentials_are_not_taken_literally_when_encoded(
    client: httpx.AsyncClient, new_client: NewClient
) -> None:
    """The encoding is decoded once: a doubly-encoded secret is a different secret."""
    client_id, secret = new_client("predict")
    twice = percent_encode_all(percent_encode_all(secret))
    response = await client.post(
        "/token", data={"grant_type": "client_credentials"}, headers=basic(client_id, twice)
    )
    assert_oauth_error(response, 401, "invalid_client", secret)


async def test_expires_in_is_the_configured_ttl(
    make_settings: Callable[..., Settings], algorithm: str
) -> None:
    settings = make_settings(algorithm, access_token_ttl_seconds=123)
    app: FastAPI = create_app(settings)
    async for client in open_client(app):
        client_id, secret = app.state.services.store.clients.create("ttl", "predict")
        response = await request_token(client, client_id, secret)
        token = assert_token_answer(response, settings, "predict")
        claims = decode_access_token(
            app.state.services.signing_keys,
            token,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )
        assert claims.expires_at - claims.issued_at == 123


async def test_requested_subset_of_scopes_is_granted(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings, new_client: NewClient
) -> None:
    client_id, secret = new_client("predict models:read metrics")
    response = await request_token(client, client_id, secret, scope="models:read predict")
    token = assert_token_answer(response, settings, "models:read predict")
    claims = decode_access_token(
        app.state.services.signing_keys,
        token,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
    )
    assert claims.scopes == {"predict", "models:read"}
    assert claims.kind == "client"
    assert claims.subject == client_id == claims.client_id


async def test_scope_the_client_lacks_is_invalid_scope(
    client: httpx.AsyncClient, new_client: NewClient
) -> None:
    client_id, secret = new_client("predict")
    response = await request_token(client, client_id, secret, scope="predict admin")
    assert_oauth_error(response, 400, "invalid_scope", secret)


async def test_unknown_scope_is_invalid_scope(
    client: httpx.AsyncClient, new_client: NewClient
) -> None:
    client_id, secret = new_client("predict")
    response = await request_token(client, client_id, secret, scope="predict root")
    assert_oauth_error(response, 400, "invalid_scope", secret)


@pytest.mark.parametrize("method", ["basic", "post"])
async def test_wrong_secret_and_unknown_client_answer_alike(
    client: httpx.AsyncClient, new_client: NewClient, method: str
) -> None:
    client_id, secret = new_client("predict")
    wrong_secret = secret[:-4] + ("AAAA" if not secret.endswith("AAAA") else "BBBB")
    unknown_id = "cl_" + "a" * 16

    async def attempt(cid: str, csecret: str) -> httpx.Response:
        data = {"grant_type": "client_credentials"}
        if method == "basic":
            return await client.post("/token", data=data, auth=(cid, csecret))
        return await client.post("/token", data=data | {"client_id": cid, "client_secret": csecret})

    wrong = await attempt(client_id, wrong_secret)
    unknown = await attempt(unknown_id, secret)
    body = assert_oauth_error(wrong, 401, "invalid_client", secret, wrong_secret)
    assert assert_oauth_error(unknown, 401, "invalid_client", secret) == body
    assert wrong.content == unknown.content
    for response in (wrong, unknown):
        challenge = response.headers["www-authenticate"]
        assert challenge.split()[0] in {"Basic", "Bearer"}
        if method == "basic":
            assert challenge.startswith("Basic")


async def test_no_client_authentication_is_invalid_client(client: httpx.AsyncClient) -> None:
    response = await client.post("/token", data={"grant_type": "client_credentials"})
    assert_oauth_error(response, 401, "invalid_client")
    assert "www-authenticate" in response.headers


async def test_missing_grant_type_is_invalid_request(
    client: httpx.AsyncClient, new_client: NewClient
) -> None:
    client_id, secret = new_client("predict")
    response = await client.post("/token", data={"scope": "predict"}, auth=(client_id, secret))
    assert_oauth_error(response, 400, "invalid_request", secret)


async def test_duplicate_parameter_is_invalid_request(
    client: httpx.AsyncClient, new_client: NewClient, subtests: pytest.Subtests
) -> None:
    """RFC 6749 §3.2: parameters must not be included more than once."""
    client_id, secret = new_client("predict")
    fields = {
        "grant_type": "client_credentials",
        "scope": "predict",
        "client_id": client_id,
        "client_secret": secret,
    }
    for duplicated, value in fields.items():
        with subtests.test(duplicated=duplicated):
            pairs = [*fields.items(), (duplicated, value)]
            body = "&".join(f"{name}={value}" for name, value in pairs)
            response = await client.post("/token", content=body, headers=FORM)
            assert_oauth_error(response, 400, "invalid_request", secret)


async def test_json_body_is_invalid_request(
    client: httpx.AsyncClient, new_client: NewClient
) -> None:
    client_id, secret = new_client("predict")
    response = await client.post(
        "/token",
        content=json.dumps(
            {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
        ),
        headers={"content-type": "application/json"},
    )
    assert_oauth_error(response, 400, "invalid_request", secret)


async def test_unsupported_grant_type(
    client: httpx.AsyncClient, new_client: NewClient, subtests: pytest.Subtests
) -> None:
    client_id, secret = new_client("predict")
    for grant_type in (
        "authorization_code",
        "refresh_token",
        "implicit",
        "urn:ietf:params:oauth:grant-type:jwt-bearer",
        "CLIENT_CREDENTIALS",
    ):
        with subtests.test(grant_type=grant_type):
            response = await client.post(
                "/token", data={"grant_type": grant_type}, auth=(client_id, secret)
            )
            assert_oauth_error(response, 400, "unsupported_grant_type", secret)


async def test_password_grant_is_unsupported_when_disabled(
    client: httpx.AsyncClient, settings: Settings, store: CredentialStore
) -> None:
    assert settings.password_grant_enabled is False
    password = "correct horse battery staple"
    store.users.create("alice", password, "predict")
    response = await client.post(
        "/token", data={"grant_type": "password", "username": "alice", "password": password}
    )
    assert_oauth_error(response, 400, "unsupported_grant_type", password)


async def test_basic_and_form_secret_together_is_invalid_request(
    client: httpx.AsyncClient, new_client: NewClient
) -> None:
    """RFC 6749 §2.3: one authentication method per request."""
    client_id, secret = new_client("predict")
    response = await client.post(
        "/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
        auth=(client_id, secret),
    )
    assert_oauth_error(response, 400, "invalid_request", secret)


async def test_disabled_client_gets_no_token(
    client: httpx.AsyncClient, store: CredentialStore, new_client: NewClient
) -> None:
    client_id, secret = new_client("predict")
    assert store.clients.disable(client_id)
    response = await request_token(client, client_id, secret)
    assert_oauth_error(response, 401, "invalid_client", secret)
