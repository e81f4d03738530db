"""``POST /token`` with ``grant_type=password`` when PASSWORD_GRANT_ENABLED is on."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from fastapi import FastAPI

from app.main import create_app
from app.settings import Settings
from auth.store import CredentialStore, LockoutPolicy
from auth.tokens import decode_access_token
from tests.auth_http.conftest import open_client
from tests.auth_http.support import assert_oauth_error, bearer, predict, seconds_until_refused

pytestmark = pytest.mark.anyio

USERNAME = "alice"
PASSWORD = "correct horse battery staple"
WRONG_PASSWORD = "incorrect horse battery staple"


@pytest.fixture
def settings(make_settings: Callable[..., Settings], algorithm: str) -> Settings:
    return make_settings(algorithm, password_grant_enabled=True)


@pytest.fixture
def user(store: CredentialStore) -> str:
    store.users.create(USERNAME, PASSWORD, "predict models:read")
    return USERNAME


async def login(
    client: httpx.AsyncClient, username: str, password: str, scope: str | None = None
) -> httpx.Response:
    data = {"grant_type": "password", "username": username, "password": password}
    if scope is not None:
        data["scope"] = scope
    return await client.post("/token", data=data)


async def test_right_password_gets_a_user_token(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings, user: str
) -> None:
    response = await login(client, user, PASSWORD, scope="predict")
    assert response.status_code == 200, response.text
    assert "no-store" in response.headers["cache-control"]
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == settings.access_token_ttl_seconds
    assert body["scope"] == "predict"
    assert PASSWORD not in response.text
    claims = decode_access_token(
        app.state.services.signing_keys,
        body["access_token"],
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
    )
    assert claims.kind == "user"
    assert claims.subject == user
    assert claims.scopes == {"predict"}
    assert (await predict(client, bearer(body["access_token"]))).status_code == 200


async def test_wrong_password_and_unknown_user_answer_alike(
    client: httpx.AsyncClient, user: str
) -> None:
    wrong = await login(client, user, WRONG_PASSWORD)
    unknown = await login(client, "mallory", PASSWORD)
    assert_oauth_error(wrong, 400, "invalid_grant", WRONG_PASSWORD, PASSWORD)
    assert_oauth_error(unknown, 400, "invalid_grant", PASSWORD)
    assert wrong.status_code == unknown.status_code
    assert wrong.content == unknown.content


async def test_user_cannot_raise_its_scope(client: httpx.AsyncClient, user: str) -> None:
    response = await login(client, user, PASSWORD, scope="predict admin")
    assert_oauth_error(response, 400, "invalid_scope", PASSWORD)


async def test_repeated_failures_lock_the_account(
    client: httpx.AsyncClient, store: CredentialStore, user: str
) -> None:
    refused = None
    for _ in range(LockoutPolicy().threshold):
        refused = await login(client, user, WRONG_PASSWORD)
        assert_oauth_error(refused, 400, "invalid_grant", WRONG_PASSWORD)
    record = store.users.get(user)
    assert record is not None
    assert record.locked_until is not None
    # Locked: even the right password is refused, with the very same answer.
    locked = await login(client, user, PASSWORD)
    assert_oauth_error(locked, 400, "invalid_grant", PASSWORD)
    assert refused is not None
    assert locked.content == refused.content


async def test_disabled_user_is_refused(
    client: httpx.AsyncClient, store: CredentialStore, user: str
) -> None:
    assert store.users.disable(user)
    response = await login(client, user, PASSWORD)
    assert_oauth_error(response, 400, "invalid_grant", PASSWORD)


async def test_disabled_user_token_is_refused(
    client: httpx.AsyncClient, store: CredentialStore, user: str
) -> None:
    response = await login(client, user, PASSWORD)
    token = response.json()["access_token"]
    assert (await predict(client, bearer(token))).status_code == 200
    assert store.users.disable(user)
    await seconds_until_refused(lambda: predict(client, bearer(token)))


async def test_missing_password_is_invalid_request(client: httpx.AsyncClient, user: str) -> None:
    response = await client.post("/token", data={"grant_type": "password", "username": user})
    assert_oauth_error(response, 400, "invalid_request")


HOSTILE_USERNAMES = [
    "ali\x00ce",  # PostgreSQL refuses NUL in text: it must not become a 500
    "\x00",
    "alice\n",
    "ålice",
    "a" * 151,
    "a" * 4000,
    "' OR '1'='1",
    "alice%00",
    "\ufffd\u202e",
]


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_hostile_usernames_are_merely_unknown(
    make_settings: Callable[..., Settings],
    request: pytest.FixtureRequest,
    subtests: pytest.Subtests,
    backend: str,
) -> None:
    overrides: dict[str, object] = {"password_grant_enabled": True}
    if backend == "postgres":
        overrides["database_url"] = request.getfixturevalue("postgres_url")
    app = create_app(make_settings("HS256", **overrides))
    async for client in open_client(app):
        app.state.services.store.users.create(USERNAME, PASSWORD, "predict")
        expected = await login(client, USERNAME, WRONG_PASSWORD)
        assert_oauth_error(expected, 400, "invalid_grant")
        for username in HOSTILE_USERNAMES:
            with subtests.test(username=username[:20]):
                response = await login(client, username, PASSWORD)
                assert response.status_code == 400, response.text
                assert response.content == expected.content
