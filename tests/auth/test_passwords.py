"""Passwords: explicit argon2id parameters, rehash on change, equal-cost misses, a CPU bound."""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable

import pytest

from auth.passwords import (
    DEFAULT_PARAMS,
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    Argon2Params,
    PasswordCheckBusy,
    PasswordHasher,
    PasswordPolicyError,
    VerifyGuard,
    hash_password,
    verify_password,
)

PASSWORD = "correct horse battery"
CHEAP = Argon2Params(memory_cost=8192, time_cost=1, parallelism=1)


def test_hash_uses_argon2id_with_the_explicit_parameters(hasher: PasswordHasher) -> None:
    hashed = hasher.hash(PASSWORD)
    p = DEFAULT_PARAMS
    assert hashed.startswith(f"$argon2id$v=19$m={p.memory_cost},t={p.time_cost},p={p.parallelism}$")
    assert PASSWORD not in hashed
    assert hashed != hasher.hash(PASSWORD)  # salted


def test_verify_accepts_the_right_password_only(hasher: PasswordHasher) -> None:
    hashed = hasher.hash(PASSWORD)
    assert hasher.verify(hashed, PASSWORD) == (True, None)
    assert hasher.verify(hashed, PASSWORD + "!") == (False, None)
    assert hasher.verify(hashed, "") == (False, None)


def test_module_functions_use_a_default_hasher() -> None:
    hashed = hash_password(PASSWORD)
    assert verify_password(hashed, PASSWORD) == (True, None)
    assert verify_password(hashed, "wrong password!") == (False, None)
    assert verify_password(None, PASSWORD) == (False, None)


@pytest.mark.parametrize(
    "password",
    ["x" * (MIN_PASSWORD_LENGTH - 1), "", "x" * (MAX_PASSWORD_LENGTH + 1), "a\ud800" * 8],
)
def test_new_passwords_must_fit_the_policy(hasher: PasswordHasher, password: str) -> None:
    with pytest.raises(PasswordPolicyError):
        hasher.hash(password)


def test_policy_bounds_are_inclusive(hasher: PasswordHasher) -> None:
    for password in ("x" * MIN_PASSWORD_LENGTH, "é" * MAX_PASSWORD_LENGTH):
        assert hasher.verify(hasher.hash(password), password) == (True, None)


@pytest.mark.parametrize("stored", ["", "garbage", "$argon2id$v=19$m=1,t=1,p=1$xx$yy", "$2b$12$x"])
def test_verify_never_raises_on_a_malformed_hash(hasher: PasswordHasher, stored: str) -> None:
    assert hasher.verify(stored, PASSWORD) == (False, None)


def test_an_over_long_password_is_refused_without_being_hashed(hasher: PasswordHasher) -> None:
    hashed = hasher.hash("y" * MAX_PASSWORD_LENGTH)
    assert hasher.verify(hashed, "y" * (MAX_PASSWORD_LENGTH + 1)) == (False, None)
    assert hasher.verify(hashed, "y" * 10_000_000) == (False, None)


def test_a_hash_with_old_parameters_is_upgraded_on_login() -> None:
    old = PasswordHasher(CHEAP)
    new = PasswordHasher(DEFAULT_PARAMS)
    stale = old.hash(PASSWORD)
    assert new.needs_update(stale)
    ok, upgraded = new.verify(stale, PASSWORD)
    assert ok
    assert upgraded is not None
    assert f"m={DEFAULT_PARAMS.memory_cost},t={DEFAULT_PARAMS.time_cost}" in upgraded
    assert new.verify(upgraded, PASSWORD) == (True, None)
    assert not new.needs_update(upgraded)
    # A wrong password never produces a new hash.
    assert new.verify(stale, "wrong password!") == (False, None)


def _median_seconds(action: Callable[[], object], runs: int = 5) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def test_an_unknown_user_costs_a_full_verification(hasher: PasswordHasher) -> None:
    hashed = hasher.hash(PASSWORD)
    dummy = hasher.dummy_hash()
    assert dummy.startswith("$argon2id$")
    assert hasher.dummy_hash() is dummy  # computed once
    assert hasher.verify(None, PASSWORD) == (False, None)
    real_miss = _median_seconds(lambda: hasher.verify(hashed, "wrong password!"))
    unknown = _median_seconds(lambda: hasher.verify(None, "wrong password!"))
    too_long = _median_seconds(lambda: hasher.verify(hashed, "z" * (MAX_PASSWORD_LENGTH + 1)))
    # Same argon2 work on every path: no cheap "user does not exist" answer.
    assert unknown > 0.5 * real_miss
    assert too_long > 0.5 * real_miss


def test_default_guard_size_is_the_cpu_count() -> None:
    assert VerifyGuard().size == len(os.sched_getaffinity(0))
    with pytest.raises(ValueError, match="at least 1"):
        VerifyGuard(size=0)


def test_a_full_guard_sheds_load_instead_of_queueing() -> None:
    guard = VerifyGuard(size=2, timeout=0.05)
    hasher = PasswordHasher(CHEAP, guard=guard)
    hashed = hasher.hash(PASSWORD)
    hasher.dummy_hash()
    holding, release = threading.Barrier(3), threading.Event()

    def hold_a_slot() -> None:
        with guard.slot():
            holding.wait()
            release.wait(timeout=10)

    threads = [threading.Thread(target=hold_a_slot) for _ in range(2)]
    for thread in threads:
        thread.start()
    holding.wait()
    try:
        with pytest.raises(PasswordCheckBusy):
            hasher.verify(hashed, PASSWORD)
        with pytest.raises(PasswordCheckBusy):
            hasher.verify(None, PASSWORD)  # the dummy path is bounded too
    finally:
        release.set()
        for thread in threads:
            thread.join()
    assert hasher.verify(hashed, PASSWORD) == (True, None)


def test_the_guard_bounds_concurrency() -> None:
    guard = VerifyGuard(size=2, timeout=30)
    active, peak, lock = 0, 0, threading.Lock()

    def work() -> None:
        nonlocal active, peak
        with guard.slot():
            with lock:
                active += 1
                peak = max(peak, active)
            time.sleep(0.02)
            with lock:
                active -= 1

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak == 2
