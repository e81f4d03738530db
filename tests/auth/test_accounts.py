"""Accounts in the credential store, on SQLite and on a real PostgreSQL: who belongs to
which account, what disabling one stops, the key cap under concurrency, the migration
that carried today's owners over, and the pure policies built on accounts (quota
subjects, minting bounds)."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, text

from auth.errors import DuplicateError, InvalidValueError, KeyLimitError
from auth.jwt_keys import signing_keys_from_secret
from auth.minting import MintRefused, new_key_terms, rotated_key_terms
from auth.principal import Principal
from auth.quota import QuotaSubject, quota_subjects
from auth.store import CredentialStore
from auth.tokens import InvalidTokenError, decode_access_token, issue_access_token
from auth.verifier import CredentialRejected, CredentialVerifier
from db.engine import make_engine
from migrations import alembic_config, upgrade_schema

PASSWORD = "correct horse battery"
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def _raw(engine: Engine, sql: str, **params: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(sql), params).all())


# --- the account of each credential ---------------------------------------------------


def test_credentials_belong_to_accounts_by_the_documented_rule(store: CredentialStore) -> None:
    named, _ = store.clients.create("acme-app", "predict")
    unnamed, _ = store.clients.create(None, "predict")
    joined, _ = store.clients.create("acme-batch", "predict", account="Acme")
    store.users.create("alice", PASSWORD, "predict")
    key_id, _ = store.api_keys.create("Acme", "predict")

    def account_of_client(client_id: str) -> str:
        record = store.clients.get(client_id)
        assert record is not None
        return record.account

    assert account_of_client(named) == "acme-app"  # a client without --account: its name
    assert account_of_client(unnamed) == unnamed  # no name: its id
    assert account_of_client(joined) == "Acme"
    user = store.users.get("alice")
    assert user is not None
    assert user.account == "alice"
    key = store.api_keys.get(key_id)
    assert key is not None
    assert (key.account, key.owner) == ("Acme", "Acme")
    assert {a.name for a in store.accounts.list()} == {"acme-app", unnamed, "Acme", "alice"}


def test_a_new_account_takes_the_plan_given_an_existing_one_keeps_its_own(
    store: CredentialStore,
) -> None:
    first, _ = store.api_keys.create("Acme", "predict", "partner")
    capped, _ = store.api_keys.create("Acme", "predict", "free")
    plain, _ = store.api_keys.create("Acme", "predict")
    account = store.accounts.get("Acme")
    assert account is not None
    assert account.plan == "partner"
    records = {k: store.api_keys.get(k) for k in (first, capped, plain)}
    assert {k: (r.plan, r.account_plan) for k, r in records.items() if r} == {
        first: ("partner", "partner"),
        capped: ("free", "partner"),  # its own plan caps it inside the account's budget
        plain: ("partner", "partner"),  # no plan of its own: the account's
    }
    store.accounts.create("Bravo", "internal")
    client_id, _ = store.clients.create("bravo-app", "predict", "free", account="Bravo")
    client = store.clients.get(client_id)
    assert client is not None
    assert (client.plan, client.account_plan) == ("free", "internal")
    principal = client.principal()
    assert (principal.account, principal.account_plan, principal.plan) == (
        "Bravo",
        "internal",
        "free",
    )


def test_account_names_are_checked_and_unique(store: CredentialStore) -> None:
    store.accounts.create("Acme", "partner", actor="ops")
    with pytest.raises(DuplicateError):
        store.accounts.create("Acme")
    for bad in ("", " ", "line\nbreak", "x" * 201):
        with pytest.raises(InvalidValueError):
            store.accounts.create(bad)
        with pytest.raises(InvalidValueError):
            store.api_keys.create(bad, "predict")
    with pytest.raises(InvalidValueError):
        store.accounts.create("ok", "Gold Plan")
    assert [a.name for a in store.accounts.list()] == ["Acme"]
    [event] = store.audit.recent(event="account.created")
    assert (event.actor, event.subject, event.detail) == ("ops", "Acme", {"plan": "partner"})


def test_disabling_an_account_stops_every_credential_of_it(store: CredentialStore) -> None:
    client_id, client_secret = store.clients.create("acme-app", "predict", account="Acme")
    store.users.create("alice", PASSWORD, "predict", account="Acme")
    key_id, api_key = store.api_keys.create("Acme", "predict")
    other_id, other_key = store.api_keys.create("Bravo", "predict")
    for kind, subject in (("client", client_id), ("user", "alice"), ("api_key", key_id)):
        assert store.is_subject_active(kind, subject, T0)  # type: ignore[arg-type]

    assert store.accounts.disable("Acme", actor="ops")
    assert not store.accounts.disable("Nobody")

    assert store.clients.authenticate(client_id, client_secret) is None
    assert store.users.authenticate("alice", PASSWORD, T0) is None
    assert store.api_keys.authenticate(api_key, T0) is None
    for kind, subject in (("client", client_id), ("user", "alice"), ("api_key", key_id)):
        assert not store.is_subject_active(kind, subject, T0)  # type: ignore[arg-type]
        assert store.subject_account(kind, subject, T0) is None  # type: ignore[arg-type]
    # Another account is untouched; the disabled one takes no new credentials.
    assert store.api_keys.authenticate(other_key, T0) is not None
    assert store.is_subject_active("api_key", other_id, T0)
    with pytest.raises(InvalidValueError, match="disabled"):
        store.api_keys.create("Acme", "predict")
    reasons = {
        e.detail["reason"]
        for name in ("client.auth_failed", "user.auth_failed", "api_key.auth_failed")
        for e in store.audit.recent(event=name)
    }
    assert reasons == {"account_disabled"}
    [event] = store.audit.recent(event="account.disabled")
    assert (event.actor, event.subject) == ("ops", "Acme")


def test_the_verifier_refuses_a_disabled_account_and_a_token_naming_another(
    store: CredentialStore,
) -> None:
    keys = signing_keys_from_secret(b"k" * 48)
    now = [1000.0]
    verifier = CredentialVerifier(store, keys, "housing-api", "housing-api", clock=lambda: now[0])
    client_id, _ = store.clients.create("acme-app", "predict", account="Acme")

    def token(account: str | None) -> str:
        return issue_access_token(
            keys,
            subject=client_id,
            client_id=client_id,
            scopes=frozenset({"predict"}),
            kind="client",
            plan="default",
            issuer="housing-api",
            audience="housing-api",
            ttl_seconds=600,
            account=account,
        ).token

    principal = verifier.verify_bearer(token("Acme"))
    assert (principal.account, principal.account_plan) == ("Acme", "default")
    # Tokens issued before accounts existed carry no claim: the store says which account.
    assert verifier.verify_bearer(token(None)).account == "Acme"
    with pytest.raises(CredentialRejected, match="wrong_account"):
        verifier.verify_bearer(token("Bravo"))
    store.accounts.disable("Acme")
    assert verifier.verify_bearer(token("Acme")).account == "Acme"  # cached, at most 2 s
    now[0] += verifier.refresh_seconds
    with pytest.raises(CredentialRejected, match="subject_disabled"):
        verifier.verify_bearer(token("Acme"))


@pytest.mark.parametrize("value", [42, "", ["Acme"], None, {"name": "Acme"}])
def test_an_acct_claim_of_the_wrong_type_is_refused(value: object) -> None:
    keys = signing_keys_from_secret(b"k" * 48)
    issued = issue_access_token(
        keys,
        subject="cl_x",
        client_id="cl_x",
        scopes=frozenset({"predict"}),
        kind="client",
        plan="default",
        issuer="housing-api",
        audience="housing-api",
        ttl_seconds=600,
        account="Acme",
    )
    assert (
        decode_access_token(
            keys, issued.token, issuer="housing-api", audience="housing-api"
        ).account
        == "Acme"
    )
    header, payload, _ = issued.token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["acct"] = value
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    signing_input = f"{header}.{body}"
    signature = base64.urlsafe_b64encode(keys.signer().sign(signing_input.encode()))
    forged = f"{signing_input}.{signature.rstrip(b'=').decode()}"
    with pytest.raises(InvalidTokenError, match="invalid_claim"):
        decode_access_token(keys, forged, issuer="housing-api", audience="housing-api")


# --- the key cap ----------------------------------------------------------------------


def test_the_key_cap_counts_active_keys_and_rotation_never_trips_it(
    store: CredentialStore,
) -> None:
    keys = [store.api_keys.create("Acme", "predict", max_active=3)[0] for _ in range(3)]
    with pytest.raises(KeyLimitError) as refused:
        store.api_keys.create("Acme", "predict", max_active=3)
    assert refused.value.limit == 3
    assert store.api_keys.active_count("Acme") == 3
    assert len(store.api_keys.list("Acme")) == 3  # the refused key was never kept
    # A rotation replaces a key: the old one, in its grace, no longer counts.
    assert store.api_keys.rotate(keys[0], grace=timedelta(hours=1)) is not None
    assert store.api_keys.active_count("Acme") == 3
    # Revoked and expired keys do not count either.
    store.api_keys.revoke(keys[1])
    store.api_keys.create("Acme", "predict", max_active=3)
    with pytest.raises(KeyLimitError):
        store.api_keys.create("Acme", "predict", max_active=3)
    # Another account has its own cap.
    store.api_keys.create("Bravo", "predict", max_active=3)


def test_the_key_cap_holds_under_concurrent_creations(store: CredentialStore) -> None:
    """Eight threads race to create keys for one account with a cap of 3: exactly 3 win
    (the account's row is locked while its keys are counted)."""
    barrier = threading.Barrier(8)
    outcomes: list[str] = []
    lock = threading.Lock()

    def create() -> None:
        barrier.wait()
        try:
            store.api_keys.create("Acme", "predict", max_active=3)
            outcome = "created"
        except KeyLimitError:
            outcome = "refused"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["created"] * 3 + ["refused"] * 5
    assert store.api_keys.active_count("Acme") == 3


# --- the migration --------------------------------------------------------------------


def test_migration_0003_carries_owners_clients_and_users_over(db_url: str) -> None:
    """A database at 0002 with today's data: each owner, named client and user becomes
    an account; an unnamed client one of its id; the plan is the one its credentials
    share, else default; rotations (a self-reference) survive the table's rebuild."""
    engine = make_engine(db_url)
    try:
        config = alembic_config()
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0002")
        created = {"t": datetime(2026, 1, 1, tzinfo=UTC).replace(tzinfo=None)}
        if engine.dialect.name == "postgresql":
            created = {"t": datetime(2026, 1, 1, tzinfo=UTC)}
        rows = [
            "INSERT INTO clients (client_id, name, secret_hmac, scopes, plan, disabled, "
            "created_at) VALUES ('cl_named', 'Acme', 'h', 'predict', 'partner', false, :t)",
            "INSERT INTO clients (client_id, name, secret_hmac, scopes, plan, disabled, "
            "created_at) VALUES ('cl_unnamed', NULL, 'h', 'predict', 'free', false, :t)",
            "INSERT INTO users (username, password_hash, scopes, plan, disabled, "
            "failed_logins, created_at) VALUES ('alice', 'h', 'predict', 'internal', false, "
            "0, :t)",
            "INSERT INTO users (username, password_hash, scopes, plan, disabled, "
            "failed_logins, created_at) VALUES ('Bravo', 'h', 'predict', 'default', false, "
            "0, :t)",
        ]
        keys = [
            ("k1", "Acme", "partner", None),
            ("k2", "Acme", "partner", "k1"),
            ("k3", "Bravo", "free", None),
        ]
        with engine.begin() as connection:
            for sql in rows:
                connection.execute(text(sql), created)
            for key_id, owner, plan, rotated_from in keys:
                connection.execute(
                    text(
                        "INSERT INTO api_keys (key_id, owner, secret_hmac, scopes, plan, "
                        "created_at, rotated_from) VALUES (:k, :o, 'h', 'predict', :p, :t, :r)"
                    ),
                    {"k": key_id, "o": owner, "p": plan, "r": rotated_from, **created},
                )
        upgrade_schema(engine)

        accounts = dict(_raw(engine, "SELECT name, plan FROM accounts"))
        assert accounts == {
            "Acme": "partner",  # two keys and a client, all partner
            "Bravo": "default",  # a free key and a default user: no shared plan
            "cl_unnamed": "free",
            "alice": "internal",
        }
        assert dict(_raw(engine, "SELECT client_id, account FROM clients")) == {
            "cl_named": "Acme",
            "cl_unnamed": "cl_unnamed",
        }
        assert dict(_raw(engine, "SELECT username, account FROM users")) == {
            "alice": "alice",
            "Bravo": "Bravo",
        }
        assert _raw(
            engine, "SELECT key_id, account, plan, rotated_from FROM api_keys ORDER BY key_id"
        ) == [
            ("k1", "Acme", "partner", None),
            ("k2", "Acme", "partner", "k1"),
            ("k3", "Bravo", "free", None),
        ]
        assert not any(disabled for (disabled,) in _raw(engine, "SELECT disabled FROM accounts"))
        with pytest.raises(Exception, match=r"(?i)null|constraint"):
            with engine.begin() as connection:
                connection.execute(
                    text(
                        "INSERT INTO users (username, password_hash, scopes, plan, disabled, "
                        "failed_logins, created_at) VALUES ('x', 'h', '', 'default', false, 0, :t)"
                    ),
                    created,
                )
    finally:
        engine.dispose()


# --- the quota policy (pure) ----------------------------------------------------------


class Plans:
    def __init__(self) -> None:
        self.rate_limit_predict = "120/minute"
        self.rate_limit_plans = {"free": "30/minute", "partner": "600/minute"}


def _principal(**values: Any) -> Principal:
    base: dict[str, Any] = {"kind": "api_key", "subject": "k1", "scopes": frozenset({"predict"})}
    return Principal(**(base | values))


def test_every_credential_of_an_account_spends_the_accounts_budget() -> None:
    for kind in ("api_key", "client", "user"):
        caller = _principal(kind=kind, plan="partner", account="Acme", account_plan="partner")
        assert quota_subjects(caller, Plans()) == [
            QuotaSubject("partner|account:Acme", "600/minute")
        ]


def test_a_lower_plan_of_its_own_is_a_second_counter_a_cap() -> None:
    capped = _principal(plan="free", account="Acme", account_plan="partner")
    assert quota_subjects(capped, Plans()) == [
        QuotaSubject("partner|account:Acme", "600/minute"),
        QuotaSubject("free|api_key:k1", "30/minute"),
    ]
    # A higher plan of its own gains nothing over the account's budget.
    richer = _principal(plan="partner", account="Acme", account_plan="free")
    assert quota_subjects(richer, Plans()) == [QuotaSubject("free|account:Acme", "30/minute")]
    # Without an account (a principal made outside the store) it pays on its own.
    assert quota_subjects(_principal(plan="free"), Plans()) == [
        QuotaSubject("free|api_key:k1", "30/minute")
    ]


# --- minting (pure) -------------------------------------------------------------------

MAX_LIFETIME = timedelta(days=365)


def _mint(minter: Principal, **values: Any) -> Any:
    arguments: dict[str, Any] = {
        "scopes": frozenset({"predict"}),
        "plan": None,
        "expires_at": None,
        "minter_ends_at": None,
        "now": T0,
        "max_lifetime": MAX_LIFETIME,
        "settings": Plans(),
    }
    return new_key_terms(minter, **(arguments | values))


def test_a_new_key_never_outranks_its_minter() -> None:
    minter = _principal(scopes=frozenset({"predict", "keys:manage"}), plan="default")
    tomorrow = T0 + timedelta(days=1)
    terms = _mint(minter, minter_ends_at=tomorrow)
    assert (terms.scopes, terms.plan, terms.expires_at) == ({"predict"}, "default", tomorrow)
    assert _mint(minter).expires_at == T0 + MAX_LIFETIME  # asked for none: the lifetime
    assert _mint(minter, plan="free").plan == "free"  # lower is fine
    refusals: list[Callable[[], Any]] = [
        lambda: _mint(minter, scopes=frozenset({"predict", "admin"})),
        lambda: _mint(minter, scopes=frozenset()),
        lambda: _mint(minter, plan="partner"),
        lambda: _mint(minter, minter_ends_at=tomorrow, expires_at=tomorrow + timedelta(1)),
        lambda: _mint(minter, expires_at=T0 + MAX_LIFETIME + timedelta(seconds=1)),
    ]
    whats = []
    for refused in refusals:
        with pytest.raises(MintRefused) as caught:
            refused()
        whats.append(caught.value.what)
    assert whats == ["scope", "scope", "plan", "expiry", "expiry"]


def test_admins_may_choose_plan_and_expiry_within_the_lifetime() -> None:
    admin = _principal(scopes=frozenset({"predict", "admin"}), plan="free")
    tomorrow = T0 + timedelta(days=1)
    terms = _mint(admin, plan="partner", minter_ends_at=tomorrow)
    assert (terms.plan, terms.expires_at) == ("partner", T0 + MAX_LIFETIME)
    with pytest.raises(MintRefused):
        _mint(admin, expires_at=T0 + MAX_LIFETIME + timedelta(days=1))


def test_a_rotated_key_keeps_its_expiry_unless_asked_for_an_earlier_one() -> None:
    minter = _principal(scopes=frozenset({"predict", "keys:manage"}), plan="default")
    old = T0 + timedelta(days=30)

    def rotate(**values: Any) -> Any:
        arguments: dict[str, Any] = {
            "old_scopes": frozenset({"predict"}),
            "old_plan": "default",
            "old_expires_at": old,
            "expires_at": None,
            "minter_ends_at": None,
            "now": T0,
            "max_lifetime": MAX_LIFETIME,
            "settings": Plans(),
        }
        return rotated_key_terms(minter, **(arguments | values))

    assert rotate().expires_at == old
    assert rotate(expires_at=T0 + timedelta(days=7)).expires_at == T0 + timedelta(days=7)
    assert rotate(minter_ends_at=T0 + timedelta(days=2)).expires_at == T0 + timedelta(days=2)
    assert rotate(old_expires_at=None).expires_at == T0 + MAX_LIFETIME  # never: cut back
    for values in (
        {"expires_at": old + timedelta(days=1)},
        {"old_scopes": frozenset({"predict", "admin"})},
        {"old_plan": "partner"},
    ):
        with pytest.raises(MintRefused):
            rotate(**values)
