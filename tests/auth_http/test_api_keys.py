"""Partner API keys made by ``housing-api keys`` and used with ``X-API-Key``."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from app.settings import Settings
from auth.secrets import generate_key_id, generate_secret, hmac_secret
from auth.store import CredentialStore
from auth.wiring import pepper
from tests.auth_http.support import (
    Cli,
    api_key,
    assert_problem,
    assert_unauthenticated,
    bearer,
    cli_json,
    get_token,
    predict,
    seconds_until_refused,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def algorithm() -> str:
    """No token is signed here: one algorithm is enough."""
    return "HS256"


def create_key(cli: Cli, scopes: str = "predict", owner: str = "Acme Realty") -> tuple[str, str]:
    created = cli_json(cli("keys", "create", "--owner", owner, "--scopes", scopes, "--json"))
    return created["key_id"], created["api_key"]


async def test_cli_key_calls_predict(client: httpx.AsyncClient, cli: Cli) -> None:
    key_id, key = create_key(cli)
    assert key.startswith(f"hpa_{key_id}_")
    response = await predict(client, api_key(key))
    assert response.status_code == 200, response.text
    assert key not in response.text


async def test_wrong_secret_with_the_right_key_id_is_401(
    client: httpx.AsyncClient, cli: Cli
) -> None:
    key_id, key = create_key(cli)
    forged = f"hpa_{key_id}_{generate_secret()}"
    assert forged != key
    assert_unauthenticated(await predict(client, api_key(forged)))
    # The real key still works: a failed guess does not lock its owner out.
    assert (await predict(client, api_key(key))).status_code == 200


async def test_unknown_key_id_is_401(client: httpx.AsyncClient, cli: Cli) -> None:
    key_id, key = create_key(cli)
    secret = key.removeprefix(f"hpa_{key_id}_")
    other_id = generate_key_id()
    assert other_id != key_id
    assert_unauthenticated(await predict(client, api_key(f"hpa_{other_id}_{secret}")))


async def test_malformed_key_is_401(client: httpx.AsyncClient, subtests: pytest.Subtests) -> None:
    for value in ("hpa", "hpa__", "Bearer x", "hpa_AAAAAAAAAAAA_" + "x" * 43, "x" * 5000):
        with subtests.test(value=value[:40]):
            assert_unauthenticated(await predict(client, api_key(value)))


async def test_empty_key_is_no_credential(client: httpx.AsyncClient) -> None:
    assert_unauthenticated(await predict(client, api_key("")), token_sent=False)


async def test_expired_key_is_401(client: httpx.AsyncClient, store: CredentialStore) -> None:
    past = datetime.now(UTC) - timedelta(minutes=1)
    _, key = store.api_keys.create("Acme Realty", "predict", expires_at=past)
    assert_unauthenticated(await predict(client, api_key(key)))


async def test_key_with_expiry_days_works_until_then(client: httpx.AsyncClient, cli: Cli) -> None:
    created = cli_json(
        cli(
            "keys",
            "create",
            "--owner",
            "Acme",
            "--scopes",
            "predict",
            "--expires-days",
            "1",
            "--json",
        )
    )
    expires_at = datetime.fromisoformat(created["expires_at"])
    assert timedelta(hours=23) < expires_at - datetime.now(UTC) <= timedelta(days=1)
    assert (await predict(client, api_key(created["api_key"]))).status_code == 200


async def test_key_revoked_with_the_cli_is_refused_within_5_seconds(
    client: httpx.AsyncClient, cli: Cli
) -> None:
    key_id, key = create_key(cli)
    # Used first, so the verifier has it cached when the revocation lands.
    assert (await predict(client, api_key(key))).status_code == 200
    revoked = cli("keys", "revoke", key_id)
    assert revoked.exit_code == 0, revoked.stderr
    await seconds_until_refused(lambda: predict(client, api_key(key)))
    listed = cli("keys", "list")
    [line] = [line for line in listed.stdout.splitlines() if line.startswith(key_id)]
    assert line.endswith("revoked")


async def test_revoking_an_unknown_key_fails_cleanly(cli: Cli) -> None:
    result = cli("keys", "revoke", generate_key_id())
    assert result.exit_code != 0
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.output


async def test_key_without_predict_is_403(client: httpx.AsyncClient, cli: Cli) -> None:
    _, key = create_key(cli, scopes="models:read")
    response = await predict(client, api_key(key))
    assert_problem(response, 403)
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    assert (await client.get("/v1/model", headers=api_key(key))).status_code == 200


async def test_key_owner_need_not_exist(client: httpx.AsyncClient, cli: Cli) -> None:
    """The owner is a free-text partner name kept for audit."""
    _, key = create_key(cli, owner="Windsor Mortgage Partners Ltd. (pilot)")
    assert (await predict(client, api_key(key))).status_code == 200


async def test_keys_list_never_prints_the_secret(
    client: httpx.AsyncClient, cli: Cli, settings: Settings
) -> None:
    created = [create_key(cli, owner=owner) for owner in ("Acme", "Beta Homes")]
    listed = cli("keys", "list")
    assert listed.exit_code == 0, listed.stderr
    hmac_key = pepper(settings)
    for key_id, key in created:
        secret = key.removeprefix(f"hpa_{key_id}_")
        assert key_id in listed.stdout
        assert secret not in listed.output
        assert hmac_secret(hmac_key, secret) not in listed.output
    assert not re.search(r"hpa_[a-z2-7]{12}_", listed.output)


async def test_cli_json_outputs_are_one_object(
    client: httpx.AsyncClient, cli: Cli, store: CredentialStore
) -> None:
    key = cli_json(cli("keys", "create", "--owner", "Acme", "--scopes", "predict", "--json"))
    assert {"key_id", "api_key"} <= key.keys()
    made = cli_json(
        cli("clients", "create", "acme-batch", "--scopes", "predict,models:read", "--json")
    )
    assert {"client_id", "client_secret"} <= made.keys()
    assert made["scopes"] == "models:read predict"  # the API's word, in the CLI too
    token = await get_token(client, made["client_id"], made["client_secret"])
    assert (await predict(client, bearer(token))).status_code == 200
    user = cli_json(
        cli(
            "users",
            "create",
            "bob",
            "--scopes",
            "predict",
            "--password-stdin",
            "--json",
            input="a long enough password\n",
        )
    )
    assert user["username"] == "bob"
    assert "password" not in user
    assert store.users.authenticate("bob", "a long enough password") is not None


@pytest.mark.parametrize(
    "args",
    [
        ("keys", "create", "--owner", "Acme", "--scopes", "root", "--json"),
        ("keys", "create", "--owner", "Acme", "--scopes", "", "--json"),
        ("clients", "create", "x", "--scopes", "predict superuser", "--json"),
    ],
)
async def test_cli_refuses_bad_scopes_with_one_line(cli: Cli, args: tuple[str, ...]) -> None:
    result = cli(*args)
    assert result.exit_code != 0
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    assert len(result.stderr.strip().splitlines()) == 1
