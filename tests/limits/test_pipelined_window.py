"""The Redis moving window answers as limits' own strategy does, in fewer round trips."""

from __future__ import annotations

import pytest
from limits import parse
from limits.storage import RedisStorage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from app.limits import PipelinedMovingWindow


@pytest.fixture
def storage(redis_url: str) -> RedisStorage:
    store = storage_from_string(redis_url)
    assert isinstance(store, RedisStorage)
    store.reset()
    return store


def test_hits_and_quota_match_the_stock_strategy(storage: RedisStorage) -> None:
    ours, stock = PipelinedMovingWindow(storage), MovingWindowRateLimiter(storage)
    item = parse("5/minute")
    answers = []
    for _ in range(7):
        acquired = ours.hit(item, "caller", "predict", cost=1)
        answers.append((acquired, ours.get_window_stats(item, "caller", "predict").remaining))
        fresh = stock.get_window_stats(item, "caller", "predict")
        assert ours.get_window_stats(item, "caller", "predict") == fresh  # read, not stashed
    assert answers == [(True, 4), (True, 3), (True, 2), (True, 1), (True, 0)] + [(False, 0)] * 2


def test_batch_cost_counts_in_both_the_hit_and_the_quota(storage: RedisStorage) -> None:
    window = PipelinedMovingWindow(storage)
    item = parse("20/minute")
    assert window.hit(item, "caller", "predict", cost=11)
    assert window.get_window_stats(item, "caller", "predict").remaining == 9
    assert not window.hit(item, "caller", "predict", cost=11)
    assert window.get_window_stats(item, "caller", "predict").remaining == 9


def test_a_stashed_window_answers_only_for_its_own_key(storage: RedisStorage) -> None:
    window = PipelinedMovingWindow(storage)
    item = parse("5/minute")
    window.hit(item, "alice", "predict")
    window.hit(item, "alice", "predict")
    # Bob's quota is read from Redis, not taken from Alice's stashed window.
    assert window.get_window_stats(item, "bob", "predict").remaining == 5
    assert window.get_window_stats(item, "alice", "predict").remaining == 3


def test_a_guarded_request_sends_its_two_scripts_and_nothing_else(storage: RedisStorage) -> None:
    """No SCRIPT EXISTS per pipeline (what redis-py adds for Script objects): the hit
    and its read go out together, and Redis sees exactly those two EVALSHA."""
    window = PipelinedMovingWindow(storage)
    item = parse("100/minute")
    window.hit(item, "warm", "predict")  # loads the scripts once
    redis = storage.get_connection()
    redis.config_resetstat()
    for _ in range(5):
        window.hit(item, "caller", "predict")
        window.get_window_stats(item, "caller", "predict")
    stats = redis.info("commandstats")  # also counts what the scripts ran inside
    assert stats["cmdstat_evalsha"]["calls"] == 10
    assert not [name for name in stats if name.startswith(("cmdstat_script", "cmdstat_eval|"))]


def test_flushed_scripts_are_loaded_again_without_losing_the_hit(storage: RedisStorage) -> None:
    window = PipelinedMovingWindow(storage)
    item = parse("5/minute")
    assert window.hit(item, "caller", "predict")
    storage.get_connection().script_flush()
    assert window.hit(item, "caller", "predict")
    assert window.get_window_stats(item, "caller", "predict").remaining == 3
