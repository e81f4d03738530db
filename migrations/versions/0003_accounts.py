"""Accounts: every client, user and API key belongs to one.

Carries today's data over, by this rule (README, "Accounts"):

* each distinct ``api_keys.owner`` becomes an account of that name, and its keys belong
  to it (the ``owner`` column becomes ``account``);
* each client belongs to the account of its name, or of its ``client_id`` when it has no
  name; each user to the account of its username (a name shared by an owner, a client
  and a user is one account);
* an account's plan is the plan all of its credentials share, else ``"default"``; every
  credential keeps its own plan, which then caps it inside the account's budget;
* an account is created enabled, at the time of its oldest credential.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

from db.types import UTCDateTime

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEFAULT_PLAN = "default"
_NAME = sa.String(200)

_accounts = sa.table(
    "accounts",
    sa.column("name", _NAME),
    sa.column("plan", sa.String(32)),
    sa.column("disabled", sa.Boolean()),
    sa.column("created_at", UTCDateTime()),
)
_api_keys = sa.table(
    "api_keys",
    sa.column("owner", _NAME),
    sa.column("account", _NAME),
    sa.column("plan", sa.String(32)),
    sa.column("created_at", UTCDateTime()),
)
_clients = sa.table(
    "clients",
    sa.column("client_id", sa.String(64)),
    sa.column("name", sa.String(100)),
    sa.column("account", _NAME),
    sa.column("plan", sa.String(32)),
    sa.column("created_at", UTCDateTime()),
)
_users = sa.table(
    "users",
    sa.column("username", sa.String(150)),
    sa.column("account", _NAME),
    sa.column("plan", sa.String(32)),
    sa.column("created_at", UTCDateTime()),
)


def _carry_over(bind: sa.Connection) -> None:
    """Fill ``account`` on every credential and create the accounts they name."""
    bind.execute(sa.update(_api_keys).values(account=_api_keys.c.owner))
    bind.execute(
        sa.update(_clients).values(account=sa.func.coalesce(_clients.c.name, _clients.c.client_id))
    )
    bind.execute(sa.update(_users).values(account=_users.c.username))
    plans: dict[str, set[str]] = {}
    oldest: dict[str, datetime] = {}
    for table in (_api_keys, _clients, _users):
        query = sa.select(table.c.account, table.c.plan, sa.func.min(table.c.created_at))
        for name, plan, created_at in bind.execute(query.group_by(table.c.account, table.c.plan)):
            plans.setdefault(name, set()).add(plan)
            if name not in oldest or created_at < oldest[name]:
                oldest[name] = created_at
    rows = [
        {
            "name": name,
            "plan": next(iter(shared)) if len(shared) == 1 else DEFAULT_PLAN,
            "disabled": False,
            "created_at": oldest[name],
        }
        for name, shared in sorted(plans.items())
    ]
    if rows:
        bind.execute(sa.insert(_accounts), rows)


def _belongs_to_an_account(table: str) -> None:
    with op.batch_alter_table(table) as batch:
        batch.alter_column("account", existing_type=_NAME, nullable=False)
        batch.create_index(f"ix_{table}_account", ["account"])
        batch.create_foreign_key(f"fk_{table}_account_accounts", "accounts", ["account"], ["name"])


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("name", _NAME, nullable=False),
        sa.Column("plan", sa.String(32), nullable=False),
        sa.Column("disabled", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_accounts"),
    )
    for table in ("clients", "users", "api_keys"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("account", _NAME, nullable=True))
    _carry_over(op.get_bind())
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_index("ix_api_keys_owner")
        batch.drop_column("owner")
    for table in ("clients", "users", "api_keys"):
        _belongs_to_an_account(table)


def downgrade() -> None:
    for table in ("clients", "users"):
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(f"fk_{table}_account_accounts", type_="foreignkey")
            batch.drop_index(f"ix_{table}_account")
            batch.drop_column("account")
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("owner", _NAME, nullable=True))
    op.get_bind().execute(sa.update(_api_keys).values(owner=_api_keys.c.account))
    with op.batch_alter_table("api_keys") as batch:
        batch.alter_column("owner", existing_type=_NAME, nullable=False)
        batch.create_index("ix_api_keys_owner", ["owner"])
        batch.drop_constraint("fk_api_keys_account_accounts", type_="foreignkey")
        batch.drop_index("ix_api_keys_account")
        batch.drop_column("account")
    op.drop_table("accounts")
