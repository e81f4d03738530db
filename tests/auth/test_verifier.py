"""The verifier answers from its caches when it may, and says so when it may not.

``cached_only=True`` is how the async authenticator stays on the event loop: it must
never read the store, and never answer from a cache older than ``refresh_seconds``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from auth.jwt_keys import signing_keys_from_secret
from auth.store import CredentialStore
from auth.tokens import DEFAULT_LEEWAY_SECONDS, issue_access_token
from auth.verifier import CredentialRejected, CredentialVerifier, StoreNeeded


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def verifier(store: CredentialStore, clock: Clock) -> CredentialVerifier:
    keys = signing_keys_from_secret(b"k" * 48)
    return CredentialVerifier(store, keys, "housing-api", "housing-api", clock=clock)


def _token(verifier: CredentialVerifier, client_id: str) -> tuple[str, str]:
    issued = issue_access_token(
        verifier.keys,
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


def test_a_token_needs_the_store_until_its_caches_are_warm(
    store: CredentialStore, verifier: CredentialVerifier, clock: Clock
) -> None:
    client_id, _ = store.clients.create("app", {"predict"})
    token, _ = _token(verifier, client_id)
    with pytest.raises(StoreNeeded):
        verifier.verify_bearer(token, cached_only=True)
    assert verifier.verify_bearer(token).subject == client_id
    assert verifier.verify_bearer(token, cached_only=True).subject == client_id
    clock.now += verifier.refresh_seconds  # caches expire: back to the store
    with pytest.raises(StoreNeeded):
        verifier.verify_bearer(token, cached_only=True)


def test_a_forged_token_is_refused_without_the_store(
    store: CredentialStore, verifier: CredentialVerifier
) -> None:
    client_id, _ = store.clients.create("app", {"predict"})
    token, _ = _token(verifier, client_id)
    with pytest.raises(CredentialRejected):
        verifier.verify_bearer(token[:-4] + "AAAA", cached_only=True)


def test_revocation_and_disabling_are_seen_after_the_refresh(
    store: CredentialStore, verifier: CredentialVerifier, clock: Clock
) -> None:
    client_id, _ = store.clients.create("app", {"predict"})
    token, jti = _token(verifier, client_id)
    verifier.verify_bearer(token)
    store.revocations.revoke(jti, datetime.now(UTC) + timedelta(minutes=10))
    clock.now += verifier.refresh_seconds
    with pytest.raises(StoreNeeded):
        verifier.verify_bearer(token, cached_only=True)
    with pytest.raises(CredentialRejected, match="revoked"):
        verifier.verify_bearer(token)

    other, _ = _token(verifier, client_id)
    store.clients.disable(client_id)
    clock.now += verifier.refresh_seconds
    with pytest.raises(CredentialRejected, match="subject_disabled"):
        verifier.verify_bearer(other)


def test_an_api_key_is_served_from_cache_only_once_verified(
    store: CredentialStore, verifier: CredentialVerifier, clock: Clock
) -> None:
    key_id, api_key = store.api_keys.create("partner", {"predict"})
    with pytest.raises(StoreNeeded):
        verifier.verify_api_key(api_key, cached_only=True)
    assert verifier.verify_api_key(api_key).subject == key_id
    assert verifier.verify_api_key(api_key, cached_only=True).subject == key_id
    store.api_keys.revoke(key_id)
    clock.now += verifier.refresh_seconds
    with pytest.raises(StoreNeeded):
        verifier.verify_api_key(api_key, cached_only=True)
    with pytest.raises(CredentialRejected):
        verifier.verify_api_key(api_key)


def test_a_verified_token_is_cached_but_still_expires(
    store: CredentialStore, verifier: CredentialVerifier, clock: Clock
) -> None:
    client_id, _ = store.clients.create("app", {"predict"})
    token, _ = _token(verifier, client_id)
    verifier.verify_bearer(token)
    wall = [time.time()]
    verifier.wall_clock = lambda: wall[0]
    assert verifier.verify_bearer(token).subject == client_id
    wall[0] += 600 + DEFAULT_LEEWAY_SECONDS  # past exp and the leeway
    with pytest.raises(CredentialRejected, match="expired"):
        verifier.verify_bearer(token)


def test_the_cache_never_answers_for_a_token_that_differs_in_one_byte(
    store: CredentialStore, verifier: CredentialVerifier
) -> None:
    client_id, _ = store.clients.create("app", {"predict"})
    token, _ = _token(verifier, client_id)
    verifier.verify_bearer(token)
    header, payload, signature = token.split(".")
    flipped = "B" if signature[5] != "B" else "C"
    forged = ".".join([header, payload, signature[:5] + flipped + signature[6:]])
    with pytest.raises(CredentialRejected):
        verifier.verify_bearer(forged)
