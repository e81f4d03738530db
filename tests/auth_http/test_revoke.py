"""``POST /revoke`` (RFC 7009) and disabling a client: the credential stops working."""

from __future__ import annotations

import time
from functools import partial

import httpx
import pytest
from fastapi import FastAPI

from app.main import create_app
from app.settings import Settings
from auth.store import CredentialStore
from auth.tokens import issue_access_token
from tests.auth_http.conftest import open_client
from tests.auth_http.support import (
    Cli,
    NewClient,
    assert_oauth_error,
    b64url_decode_json,
    bearer,
    get_token,
    predict,
    request_token,
    seconds_until_refused,
)

pytestmark = pytest.mark.anyio


def jti_of(token: str) -> str:
    jti: str = b64url_decode_json(token.split(".")[1])["jti"]
    return jti


async def revoke(
    client: httpx.AsyncClient, client_id: str, secret: str, token: str, method: str = "basic"
) -> httpx.Response:
    data = {"token": token, "token_type_hint": "access_token"}
    if method == "basic":
        return await client.post("/revoke", data=data, auth=(client_id, secret))
    return await client.post(
        "/revoke", data=data | {"client_id": client_id, "client_secret": secret}
    )


@pytest.mark.parametrize("method", ["basic", "post"])
async def test_owner_revokes_its_token(
    client: httpx.AsyncClient, store: CredentialStore, new_client: NewClient, method: str
) -> None:
    client_id, secret = new_client("predict")
    token = await get_token(client, client_id, secret)
    assert (await predict(client, bearer(token))).status_code == 200
    response = await revoke(client, client_id, secret, token, method)
    assert response.status_code == 200, response.text
    assert "no-store" in response.headers["cache-control"]
    assert secret not in response.text
    assert store.revocations.is_revoked(jti_of(token))
    # Refused from then on, by this worker at once.
    await seconds_until_refused(lambda: predict(client, bearer(token)), deadline=0.0)
    # Revoking again is harmless; other tokens of the same client still work.
    assert (await revoke(client, client_id, secret, token, method)).status_code == 200
    fresh = await get_token(client, client_id, secret)
    assert (await predict(client, bearer(fresh))).status_code == 200


async def test_revocation_reaches_another_instance_within_5_seconds(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings, new_client: NewClient
) -> None:
    """A second app on the same database (as another worker would be) refuses it too."""
    client_id, secret = new_client("predict")
    token = await get_token(client, client_id, secret)
    async for other in open_client(create_app(settings)):
        assert (await predict(other, bearer(token))).status_code == 200  # warm its caches
        assert (await revoke(client, client_id, secret, token)).status_code == 200
        await seconds_until_refused(partial(predict, other, bearer(token)))


async def test_revoking_garbage_is_200(
    client: httpx.AsyncClient, new_client: NewClient, subtests: pytest.Subtests
) -> None:
    """RFC 7009 §2.2: an invalid token needs no revocation; the answer is still 200."""
    client_id, secret = new_client("predict")
    for token in ("garbage", "a.b.c", "x" * 4000, "hpa_aaaaaaaaaaaa_" + "x" * 43):
        with subtests.test(token=token[:40]):
            response = await revoke(client, client_id, secret, token)
            assert response.status_code == 200, response.text


async def test_revoking_an_expired_token_is_200(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings, new_client: NewClient
) -> None:
    client_id, secret = new_client("predict")
    expired = issue_access_token(
        app.state.services.signing_keys,
        subject=client_id,
        client_id=client_id,
        scopes=frozenset({"predict"}),
        kind="client",
        plan="default",
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        ttl_seconds=60,
        now=int(time.time()) - 3600,
    )
    assert (await revoke(client, client_id, secret, expired.token)).status_code == 200


async def test_another_clients_token_is_not_revoked(
    client: httpx.AsyncClient, store: CredentialStore, new_client: NewClient
) -> None:
    owner_id, owner_secret = new_client("predict", name="owner")
    rival_id, rival_secret = new_client("predict", name="rival")
    token = await get_token(client, owner_id, owner_secret)
    response = await revoke(client, rival_id, rival_secret, token)
    # RFC 7009 §2.1: the request is refused with an RFC 6749 §5.2 error.
    assert_oauth_error(response, 400, "unauthorized_client", rival_secret, owner_secret)
    assert not store.revocations.is_revoked(jti_of(token))
    assert (await predict(client, bearer(token))).status_code == 200


async def test_revoke_without_client_authentication_is_invalid_client(
    client: httpx.AsyncClient, store: CredentialStore, new_client: NewClient
) -> None:
    client_id, secret = new_client("predict")
    token = await get_token(client, client_id, secret)
    response = await client.post("/revoke", data={"token": token})
    assert_oauth_error(response, 401, "invalid_client")
    assert "www-authenticate" in response.headers
    assert not store.revocations.is_revoked(jti_of(token))


async def test_revoke_with_a_wrong_secret_is_invalid_client(
    client: httpx.AsyncClient, store: CredentialStore, new_client: NewClient
) -> None:
    client_id, secret = new_client("predict")
    token = await get_token(client, client_id, secret)
    wrong = secret[::-1]
    response = await revoke(client, client_id, wrong, token)
    assert_oauth_error(response, 401, "invalid_client", secret, wrong)
    assert not store.revocations.is_revoked(jti_of(token))
    assert (await predict(client, bearer(token))).status_code == 200


async def test_revoke_without_a_token_is_invalid_request(
    client: httpx.AsyncClient, new_client: NewClient
) -> None:
    client_id, secret = new_client("predict")
    response = await client.post("/revoke", data={}, auth=(client_id, secret))
    assert_oauth_error(response, 400, "invalid_request", secret)


async def test_client_disabled_with_the_cli_loses_its_tokens(
    client: httpx.AsyncClient, cli: Cli, new_client: NewClient
) -> None:
    client_id, secret = new_client("predict")
    token = await get_token(client, client_id, secret)
    assert (await predict(client, bearer(token))).status_code == 200  # cached as active
    result = cli("clients", "disable", client_id)
    assert result.exit_code == 0, result.stderr
    await seconds_until_refused(lambda: predict(client, bearer(token)))
    assert_oauth_error(await request_token(client, client_id, secret), 401, "invalid_client")
    listed = cli("clients", "list")
    [line] = [line for line in listed.stdout.splitlines() if line.startswith(client_id)]
    assert line.endswith("disabled")
    assert secret not in listed.output
