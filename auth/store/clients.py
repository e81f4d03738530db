"""OAuth clients (the client_credentials grant): a secret shown once, kept as an HMAC."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from auth.errors import DuplicateError
from auth.models import Client
from auth.secrets import (
    DUMMY_HMAC,
    generate_client_id,
    generate_secret,
    hmac_secret,
    is_client_id,
    verify_secret,
)
from auth.store.accounts import account_for_update
from auth.store.context import Repository
from auth.store.records import (
    MAX_NAME_LENGTH,
    MAX_SECRET_LENGTH,
    AccountRecord,
    ClientRecord,
    ScopesArg,
    _account_record,
    _client_record,
    _label,
    _plan,
    _scopes_text,
)


class ClientRepository(Repository):
    def create(
        self,
        name: str | None,
        scopes: ScopesArg,
        plan: str | None = None,
        *,
        account: str | None = None,
        actor: str | None = None,
    ) -> tuple[str, str]:
        """A new client; returns ``(client_id, client_secret)``; the secret is not kept.

        It belongs to ``account``, by default an account of its own name (of its id when
        it has none), created on first use with ``plan`` (else the default plan). Its own
        plan is ``plan``, else its account's: a cap inside the account's budget.
        """
        name = _label(name, "client name", MAX_NAME_LENGTH) if name is not None else None
        scope_text = _scopes_text(scopes)
        plan = _plan(plan) if plan is not None else None
        client_id, secret = generate_client_id(), generate_secret()
        try:
            with self._sessions.begin() as session:
                owner, new_account = account_for_update(
                    session, account or name or client_id, plan, clock=self._clock
                )
                plan = plan or owner.plan
                session.add(
                    Client(
                        client_id=client_id,
                        name=name,
                        account=owner.name,
                        secret_hmac=hmac_secret(self._context.pepper, secret),
                        scopes=scope_text,
                        plan=plan,
                        disabled=False,
                        created_at=self._clock(),
                    )
                )
                session.flush()
                self._audit.add(
                    session,
                    "client.created",
                    actor,
                    client_id,
                    {
                        "name": name,
                        "scopes": scope_text,
                        "plan": plan,
                        "account": owner.name,
                        "new_account": new_account,
                    },
                )
        except IntegrityError:
            raise DuplicateError("client", name or client_id) from None
        return client_id, secret

    def authenticate(
        self, client_id: str, secret: str, *, ip: str | None = None
    ) -> ClientRecord | None:
        """The client if the secret matches and it is enabled, else None (one answer for all).

        An unknown id still costs one HMAC comparison, so timing does not tell ids apart.
        """
        row_record: ClientRecord | None = None
        stored = DUMMY_HMAC
        account_disabled = False
        if is_client_id(client_id):
            with self._sessions() as session:
                row = session.get(Client, client_id)
                if row is not None:
                    row_record, stored = _client_record(row), row.secret_hmac
                    account_disabled = row.account_row.disabled
        ok = verify_secret(self._context.pepper, secret[:MAX_SECRET_LENGTH], stored)
        ok = ok and len(secret) <= MAX_SECRET_LENGTH
        if row_record is not None and ok and not row_record.disabled and not account_disabled:
            return row_record
        reason = "unknown_client" if row_record is None else "bad_secret"
        if row_record is not None and ok:
            reason = "disabled" if row_record.disabled else "account_disabled"
        subject = client_id if is_client_id(client_id) else None  # never echo a pasted secret
        self._audit.record("client.auth_failed", None, subject, {"reason": reason}, ip=ip)
        return None

    def get(self, client_id: str) -> ClientRecord | None:
        with self._sessions() as session:
            row = session.get(Client, client_id)
            return _client_record(row) if row is not None else None

    def disable(self, client_id: str, *, actor: str | None = None) -> bool:
        """Disable a client; False if there is no such client. Its tokens stop working too,
        via ``CredentialStore.is_subject_active``."""
        return self._disable(Client, Client.client_id, client_id, "client.disabled", actor)

    def is_active(self, client_id: str) -> bool:
        """Exists, is not disabled, and neither is its account."""
        return self.active_account(client_id) is not None

    def active_account(self, client_id: str) -> AccountRecord | None:
        """The account of an enabled client whose account is enabled, else None."""
        with self._sessions() as session:
            client = session.get(Client, client_id)
            if client is None or client.disabled or client.account_row.disabled:
                return None
            return _account_record(client.account_row)

    # Last: below it, ``list`` in an annotation would name this method, not the builtin.
    def list(self, account: str | None = None) -> list[ClientRecord]:
        query = select(Client).order_by(Client.created_at, Client.client_id)
        if account is not None:
            query = query.where(Client.account == account)
        with self._sessions() as session:
            return [_client_record(row) for row in session.scalars(query)]
