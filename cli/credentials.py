"""``housing-api clients|users|keys``: operators manage credentials. Secrets print once.

Every credential belongs to an account (``housing-api accounts``): a client to
``--account`` or an account of its own name, a user to ``--account`` or one of its
username, a key to ``--account`` (``--owner`` is the option's old name). An account
that does not exist yet is created with ``--plan`` (else the default plan); an existing
one keeps its plan, and the credential's own ``--plan`` then caps it inside the
account's budget.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer

from app.settings import Settings
from auth.errors import (
    ConfigError,
    DuplicateError,
    InvalidValueError,
    KeyLimitError,
    PasswordPolicyError,
    StoreUnavailable,
)
from auth.scopes import UnknownScopeError, format_scopes, parse_scopes
from auth.store import CredentialStore
from auth.wiring import open_store
from db.engine import UnsupportedDatabaseError
from migrations import SchemaError, schema_preparer

clients = typer.Typer(help="OAuth clients (client_credentials grant).", no_args_is_help=True)
users = typer.Typer(help="Password users (password grant, when enabled).", no_args_is_help=True)
keys = typer.Typer(help="Partner API keys.", no_args_is_help=True)

ACTOR = "cli"
ScopesOpt = Annotated[
    str, typer.Option("--scopes", help="Space- or comma-separated: predict models:read ...")
]
PlanOpt = Annotated[
    str | None,
    typer.Option(
        "--plan",
        help="Rate-limit plan, e.g. free, partner: a new account's, and this credential's own "
        "cap (default: the account's plan).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=1)


@contextmanager
def _store() -> Iterator[CredentialStore]:
    """The store, its schema created on an empty database (migrated in development only);
    domain errors become one-line exits."""
    settings = Settings()
    try:
        with open_store(settings, schema_preparer(settings.is_production)) as store:
            yield store
    except (
        SchemaError,
        ConfigError,
        UnsupportedDatabaseError,
        DuplicateError,
        InvalidValueError,
        KeyLimitError,
        PasswordPolicyError,
    ) as exc:
        raise _fail(str(exc)) from None
    except StoreUnavailable:
        raise _fail("the database (DATABASE_URL) cannot be reached; try again") from None


def _scopes(text: str) -> frozenset[str]:
    try:
        scopes = parse_scopes(text)
    except UnknownScopeError as exc:
        raise _fail(str(exc)) from None
    if not scopes:
        raise _fail("give at least one scope with --scopes")
    return scopes


def _emit(as_json: bool, values: dict[str, Any], warning: str | None = None) -> None:
    if as_json:
        typer.echo(json.dumps(values))
        return
    width = max(len(k) for k in values)
    for key, value in values.items():
        typer.echo(f"{key.ljust(width)}  {value}")
    if warning:
        typer.echo(warning, err=True)


def listing(
    as_json: bool, name: str, rows: list[dict[str, Any]], line: Callable[[dict[str, Any]], str]
) -> None:
    """A list command's answer: one JSON object ``{name: rows}``, or one line per row."""
    if as_json:
        typer.echo(json.dumps({name: rows}))
        return
    for row in rows:
        typer.echo(line(row))


def _when(value: datetime | None) -> str:
    return _iso(value) or "-"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


ONCE = "This secret is shown once and stored only as an HMAC; keep it safe."


@clients.command("create")
def create_client(
    name: str,
    scopes: ScopesOpt,
    plan: PlanOpt = None,
    account: Annotated[
        str | None,
        typer.Option("--account", help="The account it belongs to (default: one of its name)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a client; prints client_id and client_secret once."""
    wanted = _scopes(scopes)
    with _store() as store:
        client_id, secret = store.clients.create(name, wanted, plan, account=account, actor=ACTOR)
        record = store.clients.get(client_id)
    _emit(
        as_json,
        {
            "client_id": client_id,
            "client_secret": secret,
            "scopes": format_scopes(wanted),
            "account": record.account if record else account or name,
        },
        ONCE,
    )


@clients.command("list")
def list_clients(as_json: JsonOpt = False) -> None:
    """Clients and their state; never a secret."""
    with _store() as store:
        found = store.clients.list()
    rows = [
        {
            "client_id": c.client_id,
            "name": c.name,
            "account": c.account,
            "scopes": format_scopes(c.scopes),
            "plan": c.plan,
            "status": "disabled" if c.disabled else "active",
        }
        for c in found
    ]
    listing(
        as_json,
        "clients",
        rows,
        lambda r: (
            f"{r['client_id']}  {r['name'] or '-'}  account={r['account']}  {r['scopes']}  "
            f"plan={r['plan']}  {r['status']}"
        ),
    )


@clients.command("disable")
def disable_client(client_id: str) -> None:
    """Disable a client: its tokens are refused by every worker within seconds."""
    with _store() as store:
        if not store.clients.disable(client_id, actor=ACTOR):
            raise _fail(f"no client {client_id!r}")
    typer.echo(f"disabled {client_id}")


@users.command("create")
def create_user(
    name: str,
    scopes: ScopesOpt,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from one line of stdin.")
    ] = False,
    plan: PlanOpt = None,
    account: Annotated[
        str | None,
        typer.Option("--account", help="The account it belongs to (default: one of its name)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a password user (the password never appears on the command line)."""
    if not password_stdin:
        raise _fail("pass the password on stdin with --password-stdin")
    password = sys.stdin.readline().rstrip("\r\n")
    wanted = _scopes(scopes)
    with _store() as store:
        user = store.users.create(name, password, wanted, plan, account=account, actor=ACTOR)
    _emit(
        as_json,
        {"username": user.username, "scopes": format_scopes(user.scopes), "account": user.account},
    )


@users.command("list")
def list_users(as_json: JsonOpt = False) -> None:
    """Password users and their state; never a password or its hash."""
    with _store() as store:
        found = store.users.list()
    rows = [
        {
            "username": u.username,
            "account": u.account,
            "scopes": format_scopes(u.scopes),
            "plan": u.plan,
            "status": "disabled" if u.disabled else "active",
        }
        for u in found
    ]
    listing(
        as_json,
        "users",
        rows,
        lambda r: (
            f"{r['username']}  account={r['account']}  {r['scopes']}  plan={r['plan']}  "
            f"{r['status']}"
        ),
    )


@users.command("disable")
def disable_user(name: str) -> None:
    """Disable a user: its tokens are refused by every worker within seconds."""
    with _store() as store:
        if not store.users.disable(name, actor=ACTOR):
            raise _fail(f"no user {name!r}")
    typer.echo(f"disabled {name}")


@keys.command("create")
def create_key(
    account: Annotated[
        str,
        typer.Option(
            "--account",
            "--owner",
            help="The account (partner) it belongs to; --owner is its old name.",
        ),
    ],
    scopes: ScopesOpt,
    expires_days: Annotated[
        int | None,
        typer.Option(
            "--expires-days",
            min=1,
            max=3650,
            help="Days until it expires (default: API_KEY_MAX_LIFETIME_DAYS).",
        ),
    ] = None,
    no_expiry: Annotated[
        bool, typer.Option("--no-expiry", help="A key that never expires (operators only).")
    ] = False,
    plan: PlanOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an API key; prints key_id and api_key once.

    Refused once the account holds MAX_KEYS_PER_ACCOUNT active keys."""
    wanted = _scopes(scopes)
    settings = Settings()
    if no_expiry and expires_days is not None:
        raise _fail("give --expires-days or --no-expiry, not both")
    days = expires_days or settings.api_key_max_lifetime_days
    expires_at = None if no_expiry else datetime.now(UTC) + timedelta(days=days)
    with _store() as store:
        key_id, api_key = store.api_keys.create(
            account,
            wanted,
            plan,
            expires_at=expires_at,
            created_by=ACTOR,
            max_active=settings.max_keys_per_account,
        )
        record = store.api_keys.get(key_id)
    values = {
        "key_id": key_id,
        "api_key": api_key,
        "owner": record.account if record else account,
        "account": record.account if record else account,
        "scopes": format_scopes(wanted),
        "expires_at": _when(expires_at) if expires_at else "never",
    }
    _emit(as_json, values, ONCE)


@keys.command("list")
def list_keys(
    owner: Annotated[
        str | None, typer.Option("--account", "--owner", help="Only this account's keys.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Key ids and their state; never the secret or its hash."""
    now = datetime.now(UTC)
    with _store() as store:
        found = store.api_keys.list(owner)
    rows = [
        {
            "key_id": k.key_id,
            "account": k.account,
            "scopes": format_scopes(k.scopes),
            "plan": k.plan,
            "created_at": _iso(k.created_at),
            "expires_at": _iso(k.expires_at),
            "last_used_at": _iso(k.last_used_at),
            "status": k.unusable_reason(now) or "active",
        }
        for k in found
    ]
    listing(
        as_json,
        "keys",
        rows,
        lambda r: (
            f"{r['key_id']}  account={r['account']}  {r['scopes']}  plan={r['plan']}  "
            f"created={r['created_at'] or '-'}  expires={r['expires_at'] or '-'}  "
            f"last_used={r['last_used_at'] or '-'}  {r['status']}"
        ),
    )


@keys.command("revoke")
def revoke_key(key_id: str) -> None:
    """Revoke a key: every worker refuses it within seconds."""
    with _store() as store:
        if not store.api_keys.revoke(key_id, ACTOR):
            raise _fail(f"no active key {key_id!r}")
    typer.echo(f"revoked {key_id}")
