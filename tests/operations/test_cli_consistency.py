"""The CLI speaks the API's words: ``scopes`` in every JSON answer, ``--json`` on every
list command (one JSON object on stdout), and help text on every command."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import typer

from cli.main import app
from tests.support.app_server import app_env, run_cli


def commands(group: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Every command of the tree (typer ships its own click: duck-typed)."""
    found = []
    for name, command in sorted(group.commands.items()):
        found.append((f"{prefix}{name}", command))
        if hasattr(command, "commands"):
            found += commands(command, f"{prefix}{name} ")
    return found


def test_every_command_has_help() -> None:
    root = typer.main.get_command(app)
    missing = [name for name, command in commands(root) if not (command.help or "").strip()]
    assert missing == []


def test_every_list_command_has_json(tmp_path: Path) -> None:
    root = typer.main.get_command(app)
    lists = [name for name, _ in commands(root) if name.endswith(" list")]
    assert {"clients list", "users list", "keys list"} <= set(lists)

    env = app_env({"VAR_DIR": str(tmp_path / "var")})
    made = [
        run_cli(env, tmp_path, "clients", "create", "app", "--scopes", "predict", "--json"),
        run_cli(env, tmp_path, "keys", "create", "--owner", "acme", "--scopes",
                "models:read predict", "--json"),
    ]  # fmt: skip
    for result in made:
        created = json.loads(result.stdout)
        assert "scope" not in created
        assert created["scopes"]
    for name in lists:
        result = run_cli(env, tmp_path, *name.split(), "--json")
        listed = json.loads(result.stdout)  # exactly one JSON object
        [(kind, rows)] = listed.items()
        assert kind == name.split()[0]
        for row in rows:
            assert "scope" not in row
            if kind != "accounts":  # credentials carry scopes; an account has none
                assert isinstance(row["scopes"], str)
    [key] = json.loads(run_cli(env, tmp_path, "keys", "list", "--json").stdout)["keys"]
    assert key["scopes"] == "models:read predict"
    assert key["status"] == "active"
    # asked for without an expiry, an operator's key still gets the account's maximum
    # lifetime (API_KEY_MAX_LIFETIME_DAYS, 365 by default): never-expiring is explicit
    lifetime = datetime.fromisoformat(key["expires_at"]) - datetime.now(UTC)
    assert timedelta(days=364) < lifetime <= timedelta(days=365)


@pytest.mark.parametrize("name", ["clients", "users", "keys"])
def test_plain_lists_stay_one_line_per_entry(tmp_path: Path, name: str) -> None:
    env = app_env({"VAR_DIR": str(tmp_path / "var")})
    assert run_cli(env, tmp_path, name, "list").stdout == ""
