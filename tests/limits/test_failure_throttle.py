"""The failed-authentication throttle, as two workers sharing one storage see it.

A worker may skip reading a name's window for ``CLEAR_SECONDS`` after reading it at
most half used; these tests pin the bound that buys: a worker's own failure makes it
read again at once, failures elsewhere are seen within ``CLEAR_SECONDS``, and past
half the limit every check reads the shared window.
"""

from __future__ import annotations

import time

import pytest

from app.limits import FailureThrottle, build_limiter
from app.settings import Settings

IP = "203.0.113.9"


@pytest.fixture
def workers(monkeypatch: pytest.MonkeyPatch) -> tuple[FailureThrottle, FailureThrottle]:
    """Two throttles on one storage: two workers on one Redis, as far as counting goes."""
    monkeypatch.setattr(FailureThrottle, "CLEAR_SECONDS", 0.2)
    limiter = build_limiter(Settings(_env_file=None))
    return (
        FailureThrottle(limiter, "4/minute", "auth-fail"),
        FailureThrottle(limiter, "4/minute", "auth-fail"),
    )


def test_failures_elsewhere_are_seen_within_the_clear_interval(
    workers: tuple[FailureThrottle, FailureThrottle],
) -> None:
    a, b = workers
    assert a.refusal(IP) is None  # read: nothing used, remembered as clear
    for _ in range(4):
        b.failed(IP)
    assert b.refusal(IP) is not None  # b saw the failures itself
    assert a.refusal(IP) is None  # the documented window
    time.sleep(FailureThrottle.CLEAR_SECONDS + 0.05)
    refusal = a.refusal(IP)
    assert refusal is not None
    assert refusal["Retry-After"]


def test_a_workers_own_failure_makes_it_read_again_at_once(
    workers: tuple[FailureThrottle, FailureThrottle],
) -> None:
    a, b = workers
    assert a.refusal(IP) is None
    for _ in range(3):
        b.failed(IP)
    a.failed(IP)
    assert a.refusal(IP) is not None


def test_past_half_the_limit_every_check_reads_the_shared_window(
    workers: tuple[FailureThrottle, FailureThrottle],
) -> None:
    a, b = workers
    for _ in range(3):
        b.failed(IP)
    assert a.refusal(IP) is None  # 3 of 4 used: allowed, but not remembered as clear
    b.failed(IP)
    assert a.refusal(IP) is not None


def test_names_are_throttled_separately(workers: tuple[FailureThrottle, FailureThrottle]) -> None:
    a, _ = workers
    for _ in range(4):
        a.failed(IP)
    assert a.refusal(IP) is not None
    assert a.refusal("198.51.100.7") is None
