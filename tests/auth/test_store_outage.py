"""The credential store unreachable or hung, in process, against a real PostgreSQL.

A TCP proxy (tests/support/tcp_proxy.py) stands between the store and the server, so
a test can refuse connections (a stopped server) or hold every byte (a server stopped
with SIGSTOP) at an exact moment. The fault suite (tests/faults/) does the same to the
real processes of a running service.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import make_url

from auth.errors import StoreUnavailable
from auth.jwt_keys import signing_keys_from_secret
from auth.passwords import PasswordHasher
from auth.store import CredentialStore, StoreHealth
from auth.tokens import issue_access_token
from auth.verifier import CredentialRejected, CredentialVerifier, StoreNeeded
from db.engine import Timeouts, make_engine
from migrations import upgrade_schema
from tests.support.postgres import PostgresServer
from tests.support.tcp_proxy import TcpProxy, tcp_proxy

pytestmark = pytest.mark.postgres

QUICK = Timeouts(connect_seconds=2, round_trip_seconds=0.5, pool_seconds=0.5)
HEALTH_LOGGER = "auth.store.health"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def proxy(postgres_server: PostgresServer) -> Iterator[TcpProxy]:
    with tcp_proxy(postgres_server.port) as proxy:
        yield proxy


@pytest.fixture
def store(
    postgres_url: str, proxy: TcpProxy, pepper: bytes, hasher: PasswordHasher
) -> Iterator[CredentialStore]:
    """A store whose every connection goes through the proxy; no trial while down
    unless a test asks (``ping``, the watcher's probe)."""
    schema = make_engine(postgres_url)
    upgrade_schema(schema)
    schema.dispose()
    url = make_url(postgres_url).set(port=proxy.port).render_as_string(hide_password=False)
    engine = make_engine(url, timeouts=QUICK)
    try:
        yield CredentialStore(engine, pepper, hasher=hasher, health=StoreHealth(3600))
    finally:
        engine.dispose()


def health_events(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == HEALTH_LOGGER]


def _token(keys_secret: bytes, client_id: str) -> tuple[str, str]:
    issued = issue_access_token(
        signing_keys_from_secret(keys_secret),
        subject=client_id,
        client_id=client_id,
        scopes=frozenset({"predict"}),
        kind="client",
        plan="default",
        issuer="housing-api",
        audience="housing-api",
        ttl_seconds=600,
    )
    return issued.token, issued.jti


def test_a_refused_store_is_one_event_down_then_refused_without_trying_then_one_event_up(
    store: CredentialStore, proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=HEALTH_LOGGER)
    client_id, _ = store.clients.create("app", {"predict"})
    proxy.refuse()
    with pytest.raises(StoreUnavailable) as first:
        store.clients.get(client_id)
    assert first.value.retry_after >= 1
    assert not store.health.up
    started = time.monotonic()
    for _ in range(50):  # known down: refused at once, the database is not tried
        with pytest.raises(StoreUnavailable):
            store.clients.get(client_id)
    assert time.monotonic() - started < 0.5
    assert not store.ping()  # the watcher's probe does try, and fails
    proxy.restore()
    assert store.ping()
    assert store.health.up
    assert store.clients.get(client_id) is not None
    assert health_events(caplog) == [
        "credential store unreachable",
        "credential store reachable again",
    ]
    up = next(r for r in caplog.records if r.getMessage() == "credential store reachable again")
    assert up.__dict__["refused_calls"] == 50
    assert all(r.exc_info is None for r in caplog.records if r.name == HEALTH_LOGGER)


def test_a_hung_store_costs_one_caller_the_timeout_and_the_others_nothing(
    store: CredentialStore, proxy: TcpProxy
) -> None:
    client_id, _ = store.clients.create("app", {"predict"})
    proxy.hang()
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        store.clients.get(client_id)
    first = time.monotonic() - started
    # The pooled connection's ping times out (0.5 s), a new one's handshake too (2 s).
    assert first < QUICK.round_trip_seconds + QUICK.connect_seconds + 1.0
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        store.clients.get(client_id)
    assert time.monotonic() - started < 0.05
    proxy.restore()
    assert store.ping()
    assert store.clients.get(client_id) is not None


def test_errors_the_database_answers_are_not_outages(store: CredentialStore) -> None:
    from auth.errors import DuplicateError

    store.clients.create("app", {"predict"})
    with pytest.raises(DuplicateError):
        store.clients.create("app", {"predict"})
    assert store.health.up


def verifier_for(store: CredentialStore, clock: Clock, grace: float) -> CredentialVerifier:
    keys = signing_keys_from_secret(b"k" * 48)
    return CredentialVerifier(
        store, keys, "housing-api", "housing-api", outage_grace_seconds=grace, clock=clock
    )


def test_verified_credentials_keep_working_within_the_grace_and_revocations_hold(
    store: CredentialStore, proxy: TcpProxy
) -> None:
    clock = Clock()
    verifier = verifier_for(store, clock, grace=60)
    client_id, _ = store.clients.create("app", {"predict"})
    other_id, _ = store.clients.create("other", {"predict"})
    _key_id, api_key = store.api_keys.create("partner", {"predict"})
    _unseen_id, unseen_key = store.api_keys.create("stranger", {"predict"})
    token, _ = _token(b"k" * 48, client_id)
    revoked, revoked_jti = _token(b"k" * 48, client_id)
    stranger_token, _ = _token(b"k" * 48, other_id)
    assert verifier.verify_bearer(token).subject == client_id
    assert verifier.verify_api_key(api_key).subject == _key_id
    store.revocations.revoke(revoked_jti, datetime.now(UTC) + timedelta(minutes=10))
    clock.now += verifier.refresh_seconds
    with pytest.raises(CredentialRejected, match="revoked"):
        verifier.verify_bearer(revoked)  # seen before the outage

    proxy.refuse()
    clock.now += verifier.refresh_seconds  # every cache is stale now
    with pytest.raises(StoreNeeded):  # not known down yet: a thread must try the store
        verifier.verify_bearer(token, cached_only=True)
    assert verifier.verify_bearer(token).subject == client_id  # tried, failed: the grace
    assert not store.health.up
    # Known down: answered from the caches on the caller's thread, no StoreNeeded.
    assert verifier.verify_bearer(token, cached_only=True).subject == client_id
    assert verifier.verify_api_key(api_key, cached_only=True).subject == _key_id
    with pytest.raises(CredentialRejected, match="revoked"):
        verifier.verify_bearer(revoked, cached_only=True)
    # Never verified here: the store would be needed, and it cannot be reached.
    with pytest.raises(StoreUnavailable):
        verifier.verify_api_key(unseen_key, cached_only=True)
    with pytest.raises(StoreUnavailable):
        verifier.verify_bearer(stranger_token, cached_only=True)
    # A forged token needs no store to be refused.
    with pytest.raises(CredentialRejected):
        verifier.verify_bearer(token[:-4] + "AAAA", cached_only=True)

    clock.now += 60  # the grace is over: bounded
    with pytest.raises(StoreUnavailable):
        verifier.verify_bearer(token, cached_only=True)
    with pytest.raises(StoreUnavailable):
        verifier.verify_api_key(api_key)

    proxy.restore()
    assert store.ping()
    assert verifier.verify_bearer(token).subject == client_id
    assert verifier.verify_api_key(unseen_key).subject == _unseen_id


def test_a_grace_of_zero_fails_closed(store: CredentialStore, proxy: TcpProxy) -> None:
    clock = Clock()
    verifier = verifier_for(store, clock, grace=0)
    client_id, _ = store.clients.create("app", {"predict"})
    _key_id, api_key = store.api_keys.create("partner", {"predict"})
    token, _ = _token(b"k" * 48, client_id)
    verifier.verify_bearer(token)
    verifier.verify_api_key(api_key)
    proxy.refuse()
    # Within the normal refresh interval the caches answer, outage or not.
    assert verifier.verify_bearer(token, cached_only=True).subject == client_id
    clock.now += verifier.refresh_seconds
    with pytest.raises(StoreUnavailable):
        verifier.verify_bearer(token)
    with pytest.raises(StoreUnavailable):
        verifier.verify_api_key(api_key, cached_only=True)


def test_a_disabled_subject_stays_refused_during_an_outage(
    store: CredentialStore, proxy: TcpProxy
) -> None:
    clock = Clock()
    verifier = verifier_for(store, clock, grace=60)
    client_id, _ = store.clients.create("app", {"predict"})
    token, _ = _token(b"k" * 48, client_id)
    verifier.verify_bearer(token)
    store.clients.disable(client_id)
    clock.now += verifier.refresh_seconds
    with pytest.raises(CredentialRejected, match="subject_disabled"):
        verifier.verify_bearer(token)
    proxy.refuse()
    clock.now += verifier.refresh_seconds
    with pytest.raises(CredentialRejected, match="subject_disabled"):
        verifier.verify_bearer(token)
