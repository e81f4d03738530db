"""The prediction quota: one O(1) hit per request that also answers the RateLimit fields.

SlowAPI stays the limiter of record: limit strings (``RATE_LIMIT_PREDICT``, the plans)
are parsed by ``limits``, the library SlowAPI runs on, and every route outside the
guard layer is still decorated by SlowAPI. The guarded prediction routes are counted
here instead, because SlowAPI's decorator needs a second read of the window for the
headers and its moving window keeps every hit of the minute; this quota keeps two
counters per subject and answers allowed/remaining/reset from the one hit.

Window semantics: a *sliding window counter* (the approach of Cloudflare's and of
``limits``' own ``sliding-window-counter`` strategy). The current fixed window's count
plus the previous window's count weighted by how much of it still overlaps the sliding
minute. It is exact within the first window of a subject (N requests pass, the next is
refused), and afterwards it can differ from a true moving window only by the
assumption that the previous window's hits were spread evenly.

Redis: one EVALSHA per request (one EVAL more when the script is not cached there),
the keys of a subject share one hash tag (``{subject}``), so the script touches one
slot and works on Redis Cluster. If Redis fails, this process falls back to its in-
memory counters (each process then enforces the full limit on its own) and retries
Redis after a back-off; ``shared_ok`` tells ``/readyz`` which of the two is counting.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, parse
from redis import asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, RedisError

logger = logging.getLogger("app.quota")

KEY_PREFIX = "hq"
# Redis fails fast; the in-memory fallback takes over.
REDIS_TIMEOUT_S = 0.25
RETRY_AFTER_FAILURE_S = (0.5, 1.0, 2.0, 5.0)
_MEMORY_SUBJECTS_MAX = 100_000

# KEYS: current window, previous window (same hash tag). ARGV: limit, cost, window
# seconds, elapsed fraction of the current window. Returns {allowed, used}: ``used``
# after this hit when allowed, before it otherwise; cost 0 only reads.
SLIDING_WINDOW = """
local limit = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local elapsed = tonumber(ARGV[4])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local previous = tonumber(redis.call('GET', KEYS[2]) or '0')
local used = math.floor(previous * (1 - elapsed)) + current
if cost == 0 then
  return {1, used}
end
if used + cost > limit then
  return {0, used}
end
if redis.call('INCRBY', KEYS[1], cost) == cost then
  redis.call('EXPIRE', KEYS[1], window * 2)
end
return {1, used + cost}
"""


@dataclass(frozen=True, slots=True)
class QuotaAnswer:
    allowed: bool
    limit: int
    remaining: int
    window: int  # seconds
    reset_at: float  # epoch seconds when the current window ends

    def headers(self) -> dict[str, str]:
        """X-RateLimit-* and the IETF RateLimit-Policy / RateLimit fields; Retry-After
        when refused."""
        reset_in = max(0, math.ceil(self.reset_at - time.time()))
        policy = f"{self.limit}-per-{self.window}s"
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(math.ceil(self.reset_at)),
            "RateLimit-Policy": f'"{policy}";q={self.limit};w={self.window}',
            "RateLimit": f'"{policy}";r={self.remaining};t={reset_in}',
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, reset_in))
        return headers


def parse_limit(text: str) -> RateLimitItem:
    """The first limit of a SlowAPI limit string (``"120/minute"``)."""
    return parse(text)


def _window(item: RateLimitItem, now: float) -> tuple[int, int, float]:
    """(window seconds, index of the current window, elapsed fraction of it)."""
    seconds = int(item.get_expiry())
    index = int(now // seconds)
    return seconds, index, (now - index * seconds) / seconds


def _answer(item: RateLimitItem, allowed: bool, used: int, index: int, seconds: int) -> QuotaAnswer:
    return QuotaAnswer(
        allowed=allowed,
        limit=item.amount,
        remaining=max(0, item.amount - used),
        window=seconds,
        reset_at=float((index + 1) * seconds),
    )


class MemoryQuota:
    """The same counters in this process only (REDIS_URL unset, or Redis failing)."""

    def __init__(self) -> None:
        # subject -> [window index, current count, previous count]
        self._counters: dict[str, list[int]] = {}

    def hit(self, subject: str, item: RateLimitItem, cost: int, now: float) -> QuotaAnswer:
        seconds, index, elapsed = _window(item, now)
        key = f"{subject}:{seconds}"
        counter = self._counters.get(key)
        if counter is None:
            if len(self._counters) >= _MEMORY_SUBJECTS_MAX:
                self._forget_idle(index)
            counter = self._counters[key] = [index, 0, 0]
        elif counter[0] != index:
            previous = counter[1] if counter[0] == index - 1 else 0
            counter[:] = [index, 0, previous]
        used = math.floor(counter[2] * (1 - elapsed)) + counter[1]
        if cost == 0:
            return _answer(item, True, used, index, seconds)
        if used + cost > item.amount:
            return _answer(item, False, used, index, seconds)
        counter[1] += cost
        return _answer(item, True, used + cost, index, seconds)

    def _forget_idle(self, index: int) -> None:
        """Bound memory: drop subjects not seen in the current or previous window."""
        self._counters = {k: c for k, c in self._counters.items() if c[0] >= index - 1}
        if len(self._counters) >= _MEMORY_SUBJECTS_MAX:
            self._counters.clear()


def redis_client(url: str) -> Any:
    """An asyncio client for ``redis://``, ``rediss://`` or (as ``limits`` spells a
    cluster) ``redis+cluster://`` URLs."""
    options: dict[str, Any] = {
        "socket_timeout": REDIS_TIMEOUT_S,
        "socket_connect_timeout": REDIS_TIMEOUT_S,
    }
    if url.startswith("redis+cluster://"):
        return RedisCluster.from_url("redis://" + url.removeprefix("redis+cluster://"), **options)
    return aioredis.Redis.from_url(url, **options)


class Quota:
    """Shared counters in Redis when configured, this process's memory otherwise."""

    def __init__(self, redis_url: str | None) -> None:
        self.memory = MemoryQuota()
        self._redis = redis_client(redis_url) if redis_url else None
        # EVALSHA by the script's own digest: no SCRIPT LOAD round trip; an EVAL loads it.
        self._sha = hashlib.sha1(SLIDING_WINDOW.encode()).hexdigest()  # noqa: S324 - Redis' id
        self._failures = 0
        self._retry_at = 0.0

    @property
    def shared(self) -> bool:
        return self._redis is not None

    def shared_ok(self) -> bool:
        """Whether hits are counted where every process sees them right now."""
        return self._redis is None or self._failures == 0

    async def hit(self, subject: str, item: RateLimitItem, cost: int = 1) -> QuotaAnswer:
        now = time.time()
        if self._redis is None or (self._failures and time.monotonic() < self._retry_at):
            return self.memory.hit(subject, item, cost, now)
        seconds, index, elapsed = _window(item, now)
        tag = f"{KEY_PREFIX}:{{{subject}}}:{seconds}"
        keys = (f"{tag}:{index}", f"{tag}:{index - 1}")
        args = (item.amount, cost, seconds, elapsed)
        try:
            allowed, used = await self._run(keys, args)
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return self.memory.hit(subject, item, cost, now)
        if self._failures:
            logger.warning("quota storage reachable again; counting is shared once more")
            self._failures = 0
        return _answer(item, bool(allowed), int(used), index, seconds)

    async def _run(self, keys: tuple[str, str], args: tuple[Any, ...]) -> tuple[int, int]:
        redis = self._redis
        assert redis is not None  # noqa: S101 - checked by the caller
        try:
            result = await redis.evalsha(self._sha, 2, *keys, *args)
        except NoScriptError:  # first use, or Redis restarted or flushed its scripts
            result = await redis.eval(SLIDING_WINDOW, 2, *keys, *args)
        return int(result[0]), int(result[1])

    def _failed(self, exc: BaseException) -> None:
        if not self._failures:
            logger.warning(
                "quota storage unreachable; counting in this process until it is back",
                extra={"error": type(exc).__name__},
            )
        delay = RETRY_AFTER_FAILURE_S[min(self._failures, len(RETRY_AFTER_FAILURE_S) - 1)]
        self._failures += 1
        self._retry_at = time.monotonic() + delay

    async def check(self) -> bool:
        """Readiness: a PING, and shared counting resumed (not on the fallback)."""
        if self._redis is None:
            return True
        try:
            await self._redis.ping()
        except (RedisError, OSError):
            return False
        if self._failures:  # reachable: count there again only once a read works
            try:
                await self._run(
                    (f"{KEY_PREFIX}:{{probe}}:0", f"{KEY_PREFIX}:{{probe}}:1"), (1, 0, 60, 0.0)
                )
            except (RedisError, OSError):
                return False
            logger.warning("quota storage reachable again; counting is shared once more")
            self._failures = 0
        return True

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
