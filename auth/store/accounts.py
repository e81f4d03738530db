"""Accounts: the customer every client, user and API key belongs to.

An account has a plan (the prediction budget all of its credentials share) and can be
disabled, which stops every credential of it (``CredentialStore.is_subject_active`` and
API-key authentication both look at the account). Accounts are never deleted.

Every repository that creates a credential calls :func:`account_for_update` inside its
own transaction: the account is created on first use (with the plan given, else
``"default"``), and on PostgreSQL its row is locked until the transaction ends, so
the per-account cap on active keys is counted exactly under concurrent creations
(SQLite serialises writers anyway).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from auth.errors import DuplicateError, InvalidValueError
from auth.models import Account
from auth.store.context import Repository
from auth.store.records import (
    MAX_LABEL_LENGTH,
    AccountRecord,
    _account_record,
    _label,
    _plan,
)

DEFAULT_PLAN = "default"


def account_name(value: str) -> str:
    """A valid account name (a printable label of at most 200 characters), or
    ``InvalidValueError``."""
    return _label(value, "account", MAX_LABEL_LENGTH)


def account_for_update(
    session: Session,
    name: str,
    plan: str | None,
    *,
    clock: Callable[[], datetime],
) -> tuple[Account, bool]:
    """The account named ``name`` and whether it was created now: created with ``plan``
    (else the default plan) if it does not exist yet, and locked (PostgreSQL: ``FOR
    UPDATE``) for the rest of the caller's transaction. An existing account keeps its
    plan. Refuses a disabled account. The caller's audit row says the account was
    created (``"new_account": true``), in the same transaction.

    Starts with a write (an ``INSERT ... ON CONFLICT DO NOTHING``), as every write
    transaction of the store does, so SQLite's busy timeout applies.
    """
    name = account_name(name)
    new_plan = _plan(plan) if plan is not None else DEFAULT_PLAN
    insert = sqlite_insert if session.get_bind().dialect.name == "sqlite" else pg_insert
    created = session.execute(
        insert(Account)
        .values(name=name, plan=new_plan, disabled=False, created_at=clock())
        .on_conflict_do_nothing(index_elements=["name"])
        .returning(Account.name)
    ).first()
    account = session.scalars(select(Account).where(Account.name == name).with_for_update()).one()
    if account.disabled:
        raise InvalidValueError("the account is disabled; it takes no new credentials")
    return account, created is not None


class AccountRepository(Repository):
    def create(
        self, name: str, plan: str = DEFAULT_PLAN, *, actor: str | None = None
    ) -> AccountRecord:
        """A new account; ``DuplicateError`` if the name is taken."""
        name, plan = account_name(name), _plan(plan)
        row = Account(name=name, plan=plan, disabled=False, created_at=self._clock())
        try:
            with self._sessions.begin() as session:
                session.add(row)
                session.flush()
                self._audit.add(session, "account.created", actor, name, {"plan": plan})
        except IntegrityError:
            raise DuplicateError("account", name) from None
        return _account_record(row)

    def get(self, name: str) -> AccountRecord | None:
        with self._sessions() as session:
            row = session.get(Account, name)
            return _account_record(row) if row is not None else None

    def disable(self, name: str, *, actor: str | None = None) -> bool:
        """Disable an account; False if there is none. Every client, user and key of it
        is refused from then on (by every worker within the verifier's refresh)."""
        with self._sessions.begin() as session:
            found = session.execute(
                update(Account)
                .where(Account.name == name)
                .values(disabled=True)
                .returning(Account.name)
            ).first()
            if found is None:
                return False
            self._audit.add(session, "account.disabled", actor, name, {})
        return True

    def is_active(self, name: str) -> bool:
        with self._sessions() as session:
            row = session.get(Account, name)
            return row is not None and not row.disabled

    # Last: below it, ``list`` in an annotation would name this method, not the builtin.
    def list(self) -> list[AccountRecord]:
        with self._sessions() as session:
            rows = session.scalars(select(Account).order_by(Account.created_at, Account.name))
            return [_account_record(row) for row in rows]
