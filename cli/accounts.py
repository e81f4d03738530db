"""``housing-api accounts``: the customers every client, user and API key belongs to.

An account's plan is the prediction budget all of its credentials share; disabling it
stops every credential of it, on every worker, within seconds.
"""

from __future__ import annotations

from typing import Annotated

import typer

from auth.store import DEFAULT_PLAN, AccountRecord
from cli.credentials import ACTOR, JsonOpt, _emit, _fail, _store, _when, listing

accounts = typer.Typer(
    help="Accounts: the customers credentials belong to (plan, disable).", no_args_is_help=True
)


def _values(account: AccountRecord) -> dict[str, str | bool]:
    return {
        "name": account.name,
        "plan": account.plan,
        "disabled": account.disabled,
        "created_at": _when(account.created_at),
    }


@accounts.command("create")
def create_account(
    name: str,
    plan: Annotated[
        str, typer.Option("--plan", help="Its budget: a RATE_LIMIT_PLANS name, or default.")
    ] = DEFAULT_PLAN,
    as_json: JsonOpt = False,
) -> None:
    """Create an account; its credentials are made with --account NAME."""
    with _store() as store:
        account = store.accounts.create(name, plan, actor=ACTOR)
    _emit(as_json, {"name": account.name, "plan": account.plan})


@accounts.command("list")
def list_accounts(as_json: JsonOpt = False) -> None:
    """Every account, with its plan, state and how many active API keys it holds."""
    with _store() as store:
        rows = [
            {**_values(account), "active_keys": store.api_keys.active_count(account.name)}
            for account in store.accounts.list()
        ]
    listing(
        as_json,
        "accounts",
        rows,
        lambda row: (
            f"{row['name']}  plan={row['plan']}  keys={row['active_keys']}  "
            f"created={row['created_at']}  {'disabled' if row['disabled'] else 'active'}"
        ),
    )


@accounts.command("disable")
def disable_account(name: str) -> None:
    """Disable an account: every client, user and key of it is refused within seconds."""
    with _store() as store:
        if not store.accounts.disable(name, actor=ACTOR):
            raise _fail(f"no account {name!r}")
    typer.echo(f"disabled {name}")
