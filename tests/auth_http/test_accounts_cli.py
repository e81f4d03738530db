"""``housing-api accounts`` and the ``--account`` options, run in process on the app's
own database, and what they mean over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from app.settings import Settings
from auth.store import CredentialStore
from tests.auth_http.support import (
    Cli,
    api_key,
    bearer,
    cli_json,
    get_token,
    predict,
    seconds_until_refused,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def algorithm() -> str:
    return "HS256"


def test_accounts_create_list_and_json(cli: Cli) -> None:
    made = cli_json(cli("accounts", "create", "Acme Realty", "--plan", "partner", "--json"))
    assert made == {"name": "Acme Realty", "plan": "partner"}
    cli_json(cli("accounts", "create", "Bravo", "--json"))
    listed = cli_json(cli("accounts", "list", "--json"))["accounts"]
    assert [(a["name"], a["plan"], a["disabled"], a["active_keys"]) for a in listed] == [
        ("Acme Realty", "partner", False, 0),
        ("Bravo", "default", False, 0),
    ]
    text = cli("accounts", "list")
    assert text.exit_code == 0
    assert "Acme Realty  plan=partner  keys=0" in text.stdout
    duplicate = cli("accounts", "create", "Bravo")
    assert duplicate.exit_code == 1
    assert duplicate.stderr.startswith("error: ")
    missing = cli("accounts", "disable", "Nobody")
    assert missing.exit_code == 1
    assert missing.stderr.startswith("error: ")


async def test_keys_and_clients_join_or_create_their_account(
    cli: Cli, store: CredentialStore
) -> None:
    cli_json(cli("accounts", "create", "Acme", "--plan", "partner", "--json"))
    joined = cli_json(cli("keys", "create", "--account", "Acme", "--scopes", "predict", "--json"))
    capped = cli_json(
        cli("keys", "create", "--owner", "Acme", "--scopes", "predict", "--plan", "free", "--json")
    )
    fresh = cli_json(
        cli(
            "keys",
            "create",
            "--account",
            "Newco",
            "--scopes",
            "predict",
            "--plan",
            "free",
            "--json",
        )
    )
    client = cli_json(cli("clients", "create", "acme-app", "--scopes", "predict", "--json"))
    member = cli_json(
        cli("clients", "create", "acme-batch", "--scopes", "predict", "--account", "Acme", "--json")
    )
    assert (joined["account"], capped["owner"], fresh["account"]) == ("Acme", "Acme", "Newco")
    assert (client["account"], member["account"]) == ("acme-app", "Acme")
    plans = {a.name: a.plan for a in store.accounts.list()}
    assert plans == {"Acme": "partner", "Newco": "free", "acme-app": "default"}
    records = {k.key_id: k for k in store.api_keys.list()}
    assert records[joined["key_id"]].plan == "partner"  # no plan: the account's
    assert records[capped["key_id"]].plan == "free"  # its own: a cap inside the budget
    assert "account=Acme" in cli("keys", "list", "--account", "Acme").stdout


def test_keys_get_the_longest_lifetime_unless_an_operator_says_never(
    cli: Cli, settings: Settings
) -> None:
    default = cli_json(cli("keys", "create", "--account", "Acme", "--scopes", "predict", "--json"))
    expected = datetime.now(UTC) + timedelta(days=settings.api_key_max_lifetime_days)
    assert abs(datetime.fromisoformat(default["expires_at"]) - expected) < timedelta(minutes=1)
    never = cli_json(
        cli("keys", "create", "--account", "Acme", "--scopes", "predict", "--no-expiry", "--json")
    )
    assert never["expires_at"] == "never"
    both = cli(
        "keys",
        "create",
        "--account",
        "Acme",
        "--scopes",
        "predict",
        "--no-expiry",
        "--expires-days",
        "3",
    )
    assert both.exit_code == 1


def test_the_cli_refuses_a_key_past_the_accounts_cap(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_KEYS_PER_ACCOUNT", "2")
    for _ in range(2):
        cli_json(cli("keys", "create", "--account", "Acme", "--scopes", "predict", "--json"))
    refused = cli("keys", "create", "--account", "Acme", "--scopes", "predict", "--json")
    assert refused.exit_code == 1
    assert refused.stdout == ""
    assert refused.stderr.startswith("error: ")
    assert "2 active API keys" in refused.stderr
    assert cli("keys", "create", "--account", "Bravo", "--scopes", "predict").exit_code == 0


async def test_accounts_disable_stops_every_credential_within_5_seconds(
    client: httpx.AsyncClient, cli: Cli
) -> None:
    key = cli_json(cli("keys", "create", "--account", "Acme", "--scopes", "predict", "--json"))
    app_client = cli_json(
        cli("clients", "create", "acme-app", "--account", "Acme", "--scopes", "predict", "--json")
    )
    other = cli_json(cli("keys", "create", "--account", "Bravo", "--scopes", "predict", "--json"))
    token = await get_token(client, app_client["client_id"], app_client["client_secret"])
    for headers in (api_key(key["api_key"]), bearer(token)):
        assert (await predict(client, headers)).status_code == 200  # cached as valid
    disabled = cli("accounts", "disable", "Acme")
    assert disabled.exit_code == 0, disabled.stderr
    await seconds_until_refused(lambda: predict(client, api_key(key["api_key"])))
    await seconds_until_refused(lambda: predict(client, bearer(token)))
    refused = await client.post(
        "/token",
        data={"grant_type": "client_credentials"},
        auth=(app_client["client_id"], app_client["client_secret"]),
    )
    assert refused.status_code == 401
    assert (await predict(client, api_key(other["api_key"]))).status_code == 200
    listed = cli_json(cli("accounts", "list", "--json"))["accounts"]
    assert {a["name"]: a["disabled"] for a in listed} == {"Acme": True, "Bravo": False}
    assert cli("keys", "create", "--account", "Acme", "--scopes", "predict").exit_code == 1
