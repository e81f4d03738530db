"""The credential store on SQLite and on a real PostgreSQL: same behaviour, same schema."""

from __future__ import annotations

import dataclasses
import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

import auth.store.clients
from auth.errors import DuplicateError, InvalidValueError, PasswordPolicyError
from auth.models import ApiKey, Base, Client, User
from auth.passwords import Argon2Params, PasswordHasher
from auth.scopes import UnknownScopeError
from auth.secrets import hmac_secret, parse_api_key, verify_secret
from auth.store import (
    LAST_USED_RESOLUTION,
    ApiKeyRecord,
    AuditRecord,
    ClientRecord,
    CredentialStore,
    LockoutPolicy,
    UserRecord,
)
from db.engine import UnsupportedDatabaseError, make_engine
from migrations import alembic_config, upgrade_schema
from monitoring.models import PredictionLogBase

PASSWORD = "correct horse battery"
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def _raw(engine: Engine, sql: str, **params: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(sql), params).all())


def _audit_text(store: CredentialStore) -> str:
    return json.dumps([dataclasses.asdict(e) for e in store.audit.recent(1000)], default=str)


def _events(store: CredentialStore, event: str) -> list[AuditRecord]:
    return store.audit.recent(1000, event=event)


# --- schema and migrations ------------------------------------------------------------


def test_schema_matches_the_models(engine: Engine) -> None:
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        # The prediction log shares the database (and its migrations).
        assert compare_metadata(context, [Base.metadata, PredictionLogBase.metadata]) == []


def test_migrations_are_idempotent_and_reach_head(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no alembic.ini needed, from any directory
    upgrade_schema(engine)
    upgrade_schema(engine)
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert _raw(engine, "SELECT version_num FROM alembic_version") == [(head,)]
    tables = set(inspect(engine).get_table_names())
    assert {"clients", "users", "api_keys", "revoked_tokens", "audit_events"} <= tables


def test_concurrent_upgrades_of_an_empty_database_agree(db_url: str) -> None:
    engines = [make_engine(db_url) for _ in range(3)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(engines))

    def upgrade(engine: Engine) -> None:
        barrier.wait()
        try:
            upgrade_schema(engine)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=upgrade, args=(engine,)) for engine in engines]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert len(_raw(engines[0], "SELECT version_num FROM alembic_version")) == 1
    finally:
        for engine in engines:
            engine.dispose()


def test_sqlite_engine_settings(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'nested' / 'dir' / 'x.db'}")
    try:
        assert _raw(engine, "PRAGMA journal_mode") == [("wal",)]
        assert _raw(engine, "PRAGMA foreign_keys") == [(1,)]
        assert _raw(engine, "PRAGMA busy_timeout") == [(5000,)]
        assert (tmp_path / "nested" / "dir" / "x.db").exists()
    finally:
        engine.dispose()


def test_postgres_urls_use_psycopg() -> None:
    for url in ("postgresql://u@h/db", "postgres://u@h/db", "postgresql+psycopg://u@h/db"):
        engine = make_engine(url)
        try:
            assert engine.dialect.driver == "psycopg"
            assert engine.pool._pre_ping  # no public accessor
        finally:
            engine.dispose()


@pytest.mark.parametrize("url", ["mysql://u@h/db", "postgresql+asyncpg://u@h/db"])
def test_unsupported_databases_are_a_config_error(url: str) -> None:
    with pytest.raises(UnsupportedDatabaseError, match="not supported"):
        make_engine(url)


def test_datetimes_come_back_aware_utc(store: CredentialStore) -> None:
    client_id, _ = store.clients.create("tz", "predict")
    record = store.clients.get(client_id)
    assert record is not None
    assert record.created_at.tzinfo is UTC
    with pytest.raises(ValueError, match="naive"):
        store.api_keys.authenticate("hpa_x", now=datetime(2030, 1, 1))


# --- records -------------------------------------------------------------------------


@pytest.mark.parametrize("record_type", [ClientRecord, UserRecord, ApiKeyRecord, AuditRecord])
def test_records_are_frozen_and_carry_no_hash(record_type: type[Any]) -> None:
    params = record_type.__dataclass_params__
    assert params.frozen
    names = {field.name for field in dataclasses.fields(record_type)}
    assert not any(word in name for name in names for word in ("hash", "hmac", "secret"))


# --- clients -------------------------------------------------------------------------


def test_client_lifecycle(store: CredentialStore, engine: Engine) -> None:
    client_id, secret = store.clients.create("partner-a", "predict models:read", plan="gold")
    assert client_id.startswith("cl_")
    assert len(secret) >= 43
    record = store.clients.authenticate(client_id, secret)
    assert record is not None
    assert record.scopes == frozenset({"predict", "models:read"})
    assert record.plan == "gold"
    assert record.principal().id == f"client:{client_id}"
    assert store.is_subject_active("client", client_id)
    # Only the HMAC is stored, never the secret.
    stored = _raw(engine, "SELECT secret_hmac FROM clients")
    assert stored == [(hmac_secret(store._context.pepper, secret),)]
    assert secret not in json.dumps(_raw(engine, "SELECT * FROM clients"), default=str)
    assert [c.client_id for c in store.clients.list()] == [client_id]
    assert "secret" not in repr(store.clients.list())


def test_client_authentication_failures_look_alike(
    store: CredentialStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    client_id, secret = store.clients.create("partner-b", ["predict"])
    compared: list[str] = []
    real_verify = verify_secret

    def spy(pepper: bytes, presented: str, stored: str) -> bool:
        compared.append(stored)
        return real_verify(pepper, presented, stored)

    monkeypatch.setattr(auth.store.clients, "verify_secret", spy)
    assert store.clients.authenticate(client_id, secret + "x") is None
    assert store.clients.authenticate("cl_aaaaaaaaaaaaaaaa", secret) is None
    assert store.clients.authenticate(secret, client_id) is None  # swapped fields
    assert store.clients.authenticate(client_id, "s" * 100_000) is None
    assert len(compared) == 4  # an unknown id still costs an HMAC comparison
    reasons = [e.detail["reason"] for e in _events(store, "client.auth_failed")]
    assert sorted(reasons) == ["bad_secret", "bad_secret", "unknown_client", "unknown_client"]
    assert secret not in _audit_text(store)  # even when pasted into the id field


def test_a_disabled_client_is_refused(store: CredentialStore) -> None:
    client_id, secret = store.clients.create(None, "predict")
    assert store.clients.disable(client_id, actor="ops")
    assert store.clients.authenticate(client_id, secret) is None
    assert not store.is_subject_active("client", client_id)
    record = store.clients.get(client_id)
    assert record is not None
    assert record.disabled
    assert store.clients.disable("cl_nonexistentxxxxx") is False
    [event] = _events(store, "client.disabled")
    assert (event.actor, event.subject) == ("ops", client_id)
    assert _events(store, "client.auth_failed")[0].detail == {"reason": "disabled"}


def test_duplicate_client_names_are_a_domain_error(store: CredentialStore) -> None:
    store.clients.create("same", "predict")
    with pytest.raises(DuplicateError, match="same"):
        store.clients.create("same", "metrics")
    store.clients.create(None, "predict")
    store.clients.create(None, "predict")  # unnamed clients do not collide
    assert len(store.clients.list()) == 3


@pytest.mark.parametrize(
    ("name", "scopes", "plan", "error"),
    [
        ("ok", "predict nonsense", "default", UnknownScopeError),
        ("", "predict", "default", InvalidValueError),
        ("line\nbreak", "predict", "default", InvalidValueError),
        ("x" * 101, "predict", "default", InvalidValueError),
        ("ok", "predict", "Gold Plan", InvalidValueError),
    ],
)
def test_bad_client_input_is_refused(
    store: CredentialStore, name: str, scopes: str, plan: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        store.clients.create(name, scopes, plan)
    assert store.clients.list() == []


# --- users ---------------------------------------------------------------------------


def test_user_login(store: CredentialStore) -> None:
    created = store.users.create("alice", PASSWORD, "predict, models:read", actor="admin")
    assert created.scopes == frozenset({"predict", "models:read"})
    user = store.users.authenticate("alice", PASSWORD, T0)
    assert user is not None
    assert user.username == "alice"
    assert user.principal().id == "user:alice"
    assert store.users.authenticate("alice", PASSWORD + "!", T0) is None
    assert store.users.authenticate("Alice", PASSWORD, T0) is None
    assert [u.username for u in store.users.list()] == ["alice"]
    [event] = _events(store, "user.created")
    assert (event.actor, event.subject) == ("admin", "alice")
    assert PASSWORD not in _audit_text(store)


def test_an_unknown_user_costs_a_dummy_verification(
    store: CredentialStore, hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str | None] = []
    real_verify = hasher.verify

    def spy(stored_hash: str | None, password: str) -> tuple[bool, str | None]:
        seen.append(stored_hash)
        return real_verify(stored_hash, password)

    monkeypatch.setattr(hasher, "verify", spy)
    assert store.users.authenticate("nobody", PASSWORD, T0) is None
    assert store.users.authenticate("n" * 10_000, PASSWORD, T0) is None
    assert seen == [None, None]
    [event, _] = _events(store, "user.auth_failed")
    assert event.subject is None  # an unknown name may be a mistyped password
    assert PASSWORD not in _audit_text(store)


def test_lockout_grows_and_resets(store: CredentialStore) -> None:
    store.users.create("bob", PASSWORD, "predict")
    now = T0
    for failure in range(1, 6):
        assert store.users.authenticate("bob", "wrong password!", now) is None
        user = store.users.get("bob")
        assert user is not None
        assert user.failed_logins == failure
        assert user.locked_until == (now + timedelta(seconds=30) if failure == 5 else None)
    # Locked: even the right password gets the same None, and does not count.
    assert store.users.authenticate("bob", PASSWORD, now + timedelta(seconds=29)) is None
    assert store.users.authenticate("bob", "wrong password!", now + timedelta(seconds=29)) is None
    locked = store.users.get("bob")
    assert locked is not None
    assert locked.failed_logins == 5
    # After the lock, one more failure doubles it.
    now += timedelta(seconds=31)
    assert store.users.authenticate("bob", "wrong password!", now) is None
    user = store.users.get("bob")
    assert user is not None
    assert user.locked_until == now + timedelta(seconds=60)
    # Success after the lock resets everything.
    now += timedelta(seconds=61)
    assert store.users.authenticate("bob", PASSWORD, now) is not None
    user = store.users.get("bob")
    assert user is not None
    assert (user.failed_logins, user.locked_until) == (0, None)
    reasons = [e.detail["reason"] for e in _events(store, "user.auth_failed")]
    assert reasons.count("locked") == 2
    assert reasons.count("bad_password") == 6


def _in_threads(count: int, action: Any) -> list[Any]:
    results: list[Any] = [None] * count
    barrier = threading.Barrier(count)

    def run(index: int) -> None:
        barrier.wait()
        results[index] = action()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_concurrent_failed_logins_are_all_counted(store: CredentialStore) -> None:
    store.users.create("ivan", PASSWORD, "predict")
    results = _in_threads(8, lambda: store.users.authenticate("ivan", "wrong password!", T0))
    assert results == [None] * 8
    user = store.users.get("ivan")
    assert user is not None
    reasons = [e.detail["reason"] for e in _events(store, "user.auth_failed")]
    assert len(reasons) == 8
    # Each attempt either tested the password (and was counted) or met the lock.
    assert user.failed_logins == reasons.count("bad_password") >= 5
    assert user.locked_until is not None


def test_concurrent_use_of_one_key(store: CredentialStore) -> None:
    _, api_key = store.api_keys.create("partner", "predict")
    results = _in_threads(8, lambda: store.api_keys.authenticate(api_key, T0))
    assert all(record is not None and record.last_used_at == T0 for record in results)


def test_lockout_policy_doubles_up_to_the_cap() -> None:
    policy = LockoutPolicy()
    assert [policy.lock_for(n) for n in range(5)] == [None] * 5
    assert [policy.lock_for(n).total_seconds() for n in range(5, 12)] == [  # type: ignore[union-attr]
        30,
        60,
        120,
        240,
        480,
        960,
        1920,
    ]
    assert policy.lock_for(12) == timedelta(hours=1)
    assert policy.lock_for(10_000) == timedelta(hours=1)


def test_a_disabled_user_is_refused(store: CredentialStore) -> None:
    store.users.create("carol", PASSWORD, "predict")
    assert store.is_subject_active("user", "carol")
    assert store.users.disable("carol", actor="ops")
    assert store.users.authenticate("carol", PASSWORD, T0) is None
    assert not store.is_subject_active("user", "carol")
    assert not store.is_subject_active("user", "nobody")
    assert store.users.disable("nobody") is False
    assert _events(store, "user.disabled")[0].subject == "carol"


def test_duplicate_usernames_are_a_domain_error(store: CredentialStore) -> None:
    store.users.create("dave", PASSWORD, "predict")
    with pytest.raises(DuplicateError, match="dave"):
        store.users.create("dave", PASSWORD + "2", "metrics")


@pytest.mark.parametrize(
    ("username", "password", "error"),
    [
        ("erin", "short", PasswordPolicyError),
        ("erin", "x" * 1025, PasswordPolicyError),
        ("with space", PASSWORD, InvalidValueError),
        ("tab\tname", PASSWORD, InvalidValueError),
        ("u" * 151, PASSWORD, InvalidValueError),
        ("\uff41lice", PASSWORD, InvalidValueError),  # fullwidth look-alike
        (".hidden", PASSWORD, InvalidValueError),
    ],
)
def test_bad_user_input_is_refused(
    store: CredentialStore, username: str, password: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        store.users.create(username, password, "predict")
    assert store.users.list() == []


def test_a_login_upgrades_an_old_password_hash(
    engine: Engine, pepper: bytes, store: CredentialStore
) -> None:
    cheap = Argon2Params(memory_cost=8192, time_cost=1)
    old_store = CredentialStore(engine, pepper, hasher=PasswordHasher(cheap))
    old_store.users.create("frank", PASSWORD, "predict")
    [(before,)] = _raw(engine, "SELECT password_hash FROM users")
    assert "m=8192,t=1" in before
    assert store.users.authenticate("frank", PASSWORD, T0) is not None
    [(after,)] = _raw(engine, "SELECT password_hash FROM users")
    assert "m=19456,t=2" in after
    assert store.users.authenticate("frank", PASSWORD, T0) is not None


# --- API keys ------------------------------------------------------------------------


def test_api_key_lifecycle(store: CredentialStore, engine: Engine) -> None:
    key_id, api_key = store.api_keys.create("Partner Inc.", "predict", created_by="admin")
    assert parse_api_key(api_key) is not None
    assert api_key.startswith(f"hpa_{key_id}_")
    record = store.api_keys.authenticate(api_key, T0)
    assert record is not None
    assert (record.key_id, record.owner, record.scopes) == (
        key_id,
        "Partner Inc.",
        frozenset({"predict"}),
    )
    assert record.principal().id == f"api_key:{key_id}"
    assert store.is_subject_active("api_key", key_id, T0)
    secret = api_key.split("_", 2)[2]  # the secret may itself hold "_"
    dump = json.dumps(_raw(engine, "SELECT * FROM api_keys"), default=str)
    assert secret not in dump
    assert api_key not in _audit_text(store)
    [event] = _events(store, "api_key.created")
    assert (event.actor, event.subject, event.detail["owner"]) == ("admin", key_id, "Partner Inc.")


def test_wrong_unknown_and_malformed_keys_are_refused(store: CredentialStore) -> None:
    key_id, api_key = store.api_keys.create("partner", "predict")
    wrong = api_key[:-1] + ("A" if api_key[-1] != "A" else "B")
    unknown = api_key.replace(key_id, "a" * 12)
    for presented in (wrong, unknown, "garbage", "", "hpa_" + "\x00" * 60, api_key + "x" * 300):
        assert store.api_keys.authenticate(presented, T0) is None
    reasons = [e.detail["reason"] for e in _events(store, "api_key.auth_failed")]
    assert sorted(reasons) == ["bad_secret"] + ["malformed"] * 4 + ["unknown_key"]
    assert wrong not in _audit_text(store)


def test_an_expired_key_is_refused(store: CredentialStore) -> None:
    _, api_key = store.api_keys.create("partner", "predict", expires_at=T0 + timedelta(days=1))
    assert store.api_keys.authenticate(api_key, T0) is not None
    assert store.api_keys.authenticate(api_key, T0 + timedelta(days=1)) is None
    assert _events(store, "api_key.auth_failed")[0].detail == {"reason": "expired"}


def test_a_revoked_key_is_refused(store: CredentialStore) -> None:
    key_id, api_key = store.api_keys.create("partner", "predict")
    assert store.api_keys.revoke(key_id, "ops")
    assert store.api_keys.authenticate(api_key, T0) is None
    assert not store.is_subject_active("api_key", key_id, T0)
    assert store.api_keys.revoke(key_id, "ops")  # idempotent
    assert store.api_keys.revoke("nosuchkeyxxx", "ops") is False
    assert len(_events(store, "api_key.revoked")) == 1
    assert _events(store, "api_key.auth_failed")[0].detail == {"reason": "revoked"}


def test_another_owners_key_looks_missing(store: CredentialStore) -> None:
    key_id, api_key = store.api_keys.create("owner-a", "predict keys:manage")
    assert store.api_keys.get(key_id, owner="owner-b") is None
    assert store.api_keys.revoke(key_id, "owner-b", owner="owner-b") is False
    assert store.api_keys.rotate(key_id, actor="owner-b", owner="owner-b") is None
    assert store.api_keys.authenticate(api_key, T0) is not None
    assert store.api_keys.get(key_id, owner="owner-a") is not None
    assert store.api_keys.revoke(key_id, "owner-a", owner="owner-a")


def test_list_api_keys_by_owner(store: CredentialStore) -> None:
    a1, _ = store.api_keys.create("a", "predict")
    a2, _ = store.api_keys.create("a", "metrics")
    b1, _ = store.api_keys.create("b", "predict")
    assert {k.key_id for k in store.api_keys.list("a")} == {a1, a2}
    assert {k.key_id for k in store.api_keys.list()} == {a1, a2, b1}
    assert store.api_keys.list("nobody") == []


def test_last_used_is_written_at_most_once_a_minute(store: CredentialStore) -> None:
    key_id, api_key = store.api_keys.create("partner", "predict")

    def last_used() -> datetime | None:
        record = store.api_keys.get(key_id)
        assert record is not None
        return record.last_used_at

    assert last_used() is None
    store.api_keys.authenticate(api_key, T0)
    assert last_used() == T0
    store.api_keys.authenticate(api_key, T0 + timedelta(seconds=30))
    assert last_used() == T0
    later = T0 + LAST_USED_RESOLUTION + timedelta(seconds=1)
    record = store.api_keys.authenticate(api_key, later)
    assert record is not None
    assert record.last_used_at == later
    assert last_used() == later


def test_rotation_keeps_the_old_key_for_a_grace_period(store: CredentialStore) -> None:
    now = datetime.now(UTC)
    old_id, old_key = store.api_keys.create("partner", "predict metrics", plan="gold")
    rotated = store.api_keys.rotate(old_id, actor="partner", grace=timedelta(minutes=5))
    assert rotated is not None
    new_id, new_key = rotated
    new = store.api_keys.authenticate(new_key, now)
    assert new is not None
    assert (new.owner, new.scopes, new.plan, new.rotated_from) == (
        "partner",
        frozenset({"predict", "metrics"}),
        "gold",
        old_id,
    )
    assert store.api_keys.authenticate(old_key, now + timedelta(minutes=4)) is not None
    assert store.api_keys.authenticate(old_key, now + timedelta(minutes=6)) is None
    assert store.api_keys.rotate(old_id, actor="partner") is None  # rotated once only
    assert _events(store, "api_key.rotated")[0].detail["new_key_id"] == new_id


def test_bad_key_input_is_refused(store: CredentialStore) -> None:
    with pytest.raises(UnknownScopeError):
        store.api_keys.create("partner", "predict root")
    with pytest.raises(InvalidValueError):
        store.api_keys.create("\x1b[31mred", "predict")
    with pytest.raises(ValueError, match="naive"):
        store.api_keys.create("partner", "predict", expires_at=datetime(2030, 1, 1))
    assert store.api_keys.list() == []


# --- revoked tokens ------------------------------------------------------------------


def test_token_revocation(store: CredentialStore) -> None:
    now = datetime.now(UTC)
    store.revocations.revoke("jti-1", now + timedelta(minutes=15), actor="client:x")
    store.revocations.revoke("jti-1", now + timedelta(minutes=15))  # idempotent
    store.revocations.revoke("jti-old", now - timedelta(minutes=1))
    assert store.revocations.is_revoked("jti-1")
    assert not store.revocations.is_revoked("jti-2")
    assert [r.jti for r in store.revocations.since(None, now)] == ["jti-1"]
    assert store.revocations.since(now + timedelta(seconds=5), now) == []
    assert [r.jti for r in store.revocations.since(now - timedelta(seconds=5), now)] == ["jti-1"]
    assert store.revocations.purge_expired(now) == 1
    assert not store.revocations.is_revoked("jti-old")
    assert store.revocations.is_revoked("jti-1")
    assert len(_events(store, "token.revoked")) == 2
    with pytest.raises(InvalidValueError):
        store.revocations.revoke("", now)


# --- audit ---------------------------------------------------------------------------


def test_audit_redacts_secrets(store: CredentialStore) -> None:
    _, api_key = store.api_keys.create("partner", "predict")
    store.audit.record(
        "custom.event",
        "admin",
        "subject-1",
        {
            "client_secret": "s3cr3t",
            "password": "hunter2hunter2",
            "nested": {"password_hash": "$argon2id$...", "ok": 1},
            "pasted": api_key,
            "when": T0,
            "tags": {"b", "a"},
        },
        ip="203.0.113.7",
    )
    [event] = _events(store, "custom.event")
    assert event.detail == {
        "client_secret": "[redacted]",
        "password": "[redacted]",
        "nested": {"password_hash": "[redacted]", "ok": 1},
        "pasted": "[redacted]",
        "when": T0.isoformat(),
        "tags": ["a", "b"],
    }
    assert (event.actor, event.subject, event.ip) == ("admin", "subject-1", "203.0.113.7")
    assert event.at.tzinfo is UTC


def test_every_change_and_failure_is_audited_without_secrets(store: CredentialStore) -> None:
    client_id, client_secret = store.clients.create("c", "predict")
    store.clients.authenticate(client_id, "nope", ip="198.51.100.1")
    store.clients.disable(client_id)
    store.users.create("gina", PASSWORD, "predict")
    store.users.authenticate("gina", "wrong password!", T0)
    store.users.disable("gina")
    key_id, api_key = store.api_keys.create("p", "predict")
    store.api_keys.authenticate("hpa_bogus", T0)
    store.api_keys.revoke(key_id)
    store.revocations.revoke("jti-9", T0)
    events = {e.event for e in store.audit.recent(1000)}
    assert events == {
        "client.created",
        "client.auth_failed",
        "client.disabled",
        "user.created",
        "user.auth_failed",
        "user.disabled",
        "api_key.created",
        "api_key.auth_failed",
        "api_key.revoked",
        "token.revoked",
    }
    dump = _audit_text(store)
    for secret in (client_secret, PASSWORD, api_key, api_key.split("_", 2)[2]):
        assert secret not in dump
    assert "$argon2" not in dump
    assert _events(store, "client.auth_failed")[0].ip == "198.51.100.1"


# --- the store needs a real pepper ---------------------------------------------------


def test_a_short_pepper_is_refused(engine: Engine) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        CredentialStore(engine, b"short")


def test_keys_do_not_survive_a_pepper_change(
    engine: Engine, store: CredentialStore, hasher: PasswordHasher
) -> None:
    _, api_key = store.api_keys.create("partner", "predict")
    other = CredentialStore(engine, b"another pepper of enough length!", hasher=hasher)
    assert other.api_keys.authenticate(api_key, T0) is None


def test_orm_rows_stay_inside_the_store(store: CredentialStore) -> None:
    store.clients.create("c", "predict")
    store.users.create("hank", PASSWORD, "predict")
    store.api_keys.create("p", "predict")
    for value in (*store.clients.list(), *store.users.list(), *store.api_keys.list()):
        assert not isinstance(value, Client | User | ApiKey)
        assert dataclasses.is_dataclass(value)


def test_ping(store: CredentialStore) -> None:
    assert store.ping()
