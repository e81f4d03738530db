"""``housing-api clients|users|keys``: operators manage credentials. Secrets print once."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer

from app.settings import Settings
from auth.errors import (
    ConfigError,
    DuplicateError,
    InvalidValueError,
    PasswordPolicyError,
    StoreUnavailable,
)
from auth.scopes import UnknownScopeError, format_scopes, parse_scopes
from auth.store import CredentialStore
from auth.wiring import open_store
from db.engine import UnsupportedDatabaseError
from migrations import upgrade_schema

clients = typer.Typer(help="OAuth clients (client_credentials grant).", no_args_is_help=True)
users = typer.Typer(help="Password users (password grant, when enabled).", no_args_is_help=True)
keys = typer.Typer(help="Partner API keys.", no_args_is_help=True)

ACTOR = "cli"
ScopesOpt = Annotated[
    str, typer.Option("--scopes", help="Space- or comma-separated: predict models:read ...")
]
PlanOpt = Annotated[str, typer.Option("--plan", help="Rate-limit plan, e.g. free, partner.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=1)


@contextmanager
def _store() -> Iterator[CredentialStore]:
    """The store with its schema created or migrated; domain errors become one-line exits."""
    try:
        with open_store(Settings(), upgrade_schema) as store:
            yield store
    except (
        ConfigError,
        UnsupportedDatabaseError,
        DuplicateError,
        InvalidValueError,
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


def _when(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else "-"


ONCE = "This secret is shown once and stored only as an HMAC; keep it safe."


@clients.command("create")
def create_client(
    name: str, scopes: ScopesOpt, plan: PlanOpt = "default", as_json: JsonOpt = False
) -> None:
    """Create a client; prints client_id and client_secret once."""
    wanted = _scopes(scopes)
    with _store() as store:
        client_id, secret = store.clients.create(name, wanted, plan, actor=ACTOR)
    _emit(
        as_json,
        {"client_id": client_id, "client_secret": secret, "scope": format_scopes(wanted)},
        ONCE,
    )


@clients.command("list")
def list_clients() -> None:
    with _store() as store:
        for c in store.clients.list():
            state = "disabled" if c.disabled else "active"
            scope = format_scopes(c.scopes)
            typer.echo(f"{c.client_id}  {c.name or '-'}  {scope}  plan={c.plan}  {state}")


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
    plan: PlanOpt = "default",
    as_json: JsonOpt = False,
) -> None:
    """Create a password user (the password never appears on the command line)."""
    if not password_stdin:
        raise _fail("pass the password on stdin with --password-stdin")
    password = sys.stdin.readline().rstrip("\r\n")
    wanted = _scopes(scopes)
    with _store() as store:
        user = store.users.create(name, password, wanted, plan, actor=ACTOR)
    _emit(as_json, {"username": user.username, "scope": format_scopes(user.scopes)})


@users.command("list")
def list_users() -> None:
    with _store() as store:
        for u in store.users.list():
            state = "disabled" if u.disabled else "active"
            typer.echo(f"{u.username}  {format_scopes(u.scopes)}  plan={u.plan}  {state}")


@users.command("disable")
def disable_user(name: str) -> None:
    with _store() as store:
        if not store.users.disable(name, actor=ACTOR):
            raise _fail(f"no user {name!r}")
    typer.echo(f"disabled {name}")


@keys.command("create")
def create_key(
    owner: Annotated[str, typer.Option("--owner", help="Partner name, kept for audit.")],
    scopes: ScopesOpt,
    expires_days: Annotated[
        int | None, typer.Option("--expires-days", min=1, max=3650, help="Days until it expires.")
    ] = None,
    plan: PlanOpt = "default",
    as_json: JsonOpt = False,
) -> None:
    """Create an API key; prints key_id and api_key once."""
    wanted = _scopes(scopes)
    expires_at = datetime.now(UTC) + timedelta(days=expires_days) if expires_days else None
    with _store() as store:
        key_id, api_key = store.api_keys.create(
            owner, wanted, plan, expires_at=expires_at, created_by=ACTOR
        )
    values = {"key_id": key_id, "api_key": api_key, "owner": owner, "scope": format_scopes(wanted)}
    if expires_at:
        values["expires_at"] = _when(expires_at)
    _emit(as_json, values, ONCE)


@keys.command("list")
def list_keys(
    owner: Annotated[str | None, typer.Option("--owner", help="Only this owner's keys.")] = None,
) -> None:
    """Key ids and their state; never the secret or its hash."""
    now = datetime.now(UTC)
    with _store() as store:
        for k in store.api_keys.list(owner):
            state = k.unusable_reason(now) or "active"
            typer.echo(
                f"{k.key_id}  owner={k.owner}  {format_scopes(k.scopes)}  plan={k.plan}  "
                f"created={_when(k.created_at)}  expires={_when(k.expires_at)}  "
                f"last_used={_when(k.last_used_at)}  {state}"
            )


@keys.command("revoke")
def revoke_key(key_id: str) -> None:
    """Revoke a key: every worker refuses it within seconds."""
    with _store() as store:
        if not store.api_keys.revoke(key_id, ACTOR):
            raise _fail(f"no active key {key_id!r}")
    typer.echo(f"revoked {key_id}")
