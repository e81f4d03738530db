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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from limits import RateLimitItem, parse
from redis import asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import NoScriptError, RedisError

logger = logging.getLogger("app.quota")

KEY_PREFIX = "hq"
# Redis fails fast; the in-memory fallback takes over.
REDIS_TIMEOUT_S = 0.25
RETRY_AFTER_FAILURE_S = (0.5, 1.0, 2.0, 5.0)
_MEMORY_SUBJECTS_MAX = 100_000

# KEYS: per counter, its current and previous window (one hash tag for all). ARGV: the
# cost, then per counter its limit, window seconds and elapsed fraction of the current
# window. A hit is allowed only if every counter has room, and then charges them all.
# Returns {refused counter (1-based) or 0, used per counter}: ``used`` after the hit
# when allowed, before it otherwise; cost 0 only reads.
SLIDING_WINDOW = """
local cost = tonumber(ARGV[1])
local n = #KEYS / 2
local used, refused = {}, 0
for i = 1, n do
  local limit = tonumber(ARGV[3 * i - 1])
  local elapsed = tonumber(ARGV[3 * i + 1])
  local current = tonumber(redis.call('GET', KEYS[2 * i - 1]) or '0')
  local previous = tonumber(redis.call('GET', KEYS[2 * i]) or '0')
  used[i] = math.floor(previous * (1 - elapsed)) + current
  if cost > 0 and refused == 0 and used[i] + cost > limit then
    refused = i
  end
end
if cost > 0 and refused == 0 then
  for i = 1, n do
    if redis.call('INCRBY', KEYS[2 * i - 1], cost) == cost then
      redis.call('EXPIRE', KEYS[2 * i - 1], tonumber(ARGV[3 * i]) * 2)
    end
    used[i] = used[i] + cost
  end
end
local answer = {refused}
for i = 1, n do
  answer[i + 1] = used[i]
end
return answer
"""

Counter = tuple[str, RateLimitItem]  # a counter's name and its limit


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


def _answer(
    counters: Sequence[Counter], refused: int, used: Sequence[int], now: float
) -> QuotaAnswer:
    """What the caller is told: its first counter (the budget), or the one that refused."""
    index = refused - 1 if refused else 0
    item = counters[index][1]
    seconds, window, _ = _window(item, now)
    return QuotaAnswer(
        allowed=not refused,
        limit=item.amount,
        remaining=max(0, item.amount - used[index]),
        window=seconds,
        reset_at=float((window + 1) * seconds),
    )


class MemoryQuota:
    """The same counters in this process only (REDIS_URL unset, or Redis failing)."""

    def __init__(self) -> None:
        # counter -> [window index, current count, previous count]
        self._counters: dict[str, list[int]] = {}

    def hit(self, counters: Sequence[Counter], cost: int, now: float) -> QuotaAnswer:
        states, used, refused = [], [], 0
        for i, (name, item) in enumerate(counters, start=1):
            seconds, index, elapsed = _window(item, now)
            state = self._state(f"{name}:{seconds}", index)
            states.append(state)
            used.append(math.floor(state[2] * (1 - elapsed)) + state[1])
            if cost and not refused and used[-1] + cost > item.amount:
                refused = i
        if cost and not refused:
            for state in states:
                state[1] += cost
            used = [u + cost for u in used]
        return _answer(counters, refused, used, now)

    def _state(self, key: str, index: int) -> list[int]:
        state = self._counters.get(key)
        if state is None:
            if len(self._counters) >= _MEMORY_SUBJECTS_MAX:
                self._forget_idle(index)
            state = self._counters[key] = [index, 0, 0]
        elif state[0] != index:
            previous = state[1] if state[0] == index - 1 else 0
            state[:] = [index, 0, previous]
        return state

    def _forget_idle(self, index: int) -> None:
        """Bound memory: drop counters not seen in the current or previous window."""
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
        return _cluster_client(url, options)
    return aioredis.Redis.from_url(url, **options)


def _cluster_client(url: str, options: dict[str, Any]) -> RedisCluster:
    """``redis+cluster://`` URLs as ``limits`` reads them (optional user information,
    then ``host:port,host:port,...``): every listed node is a startup node (redis-py's
    own ``from_url`` takes one)."""
    credentials, _, hosts = urlsplit(url).netloc.rpartition("@")
    username, _, password = credentials.partition(":")
    nodes = []
    for host in hosts.split(","):
        name, _, port = host.rpartition(":")
        nodes.append(ClusterNode(name, int(port)))
    return RedisCluster(
        startup_nodes=nodes,
        username=unquote(username) or None,
        password=unquote(password) or None,
        **options,
    )


class Quota:
    """Shared counters in Redis when configured, this process's memory otherwise."""

    def __init__(self, redis_url: str | None) -> None:
        self.memory = MemoryQuota()
        self._redis = redis_client(redis_url) if redis_url else None
        # EVALSHA by the script's own digest: no SCRIPT LOAD round trip; an EVAL loads it.
        self._sha = hashlib.sha1(SLIDING_WINDOW.encode(), usedforsecurity=False).hexdigest()
        self._failures = 0
        self._retry_at = 0.0

    @property
    def shared(self) -> bool:
        return self._redis is not None

    def shared_ok(self) -> bool:
        """Whether hits are counted where every process sees them right now."""
        return self._redis is None or self._failures == 0

    async def hit(self, counters: Sequence[Counter], cost: int = 1) -> QuotaAnswer:
        """Charge ``cost`` to every counter if each has room (cost 0: read them)."""
        now = time.time()
        if self._redis is None or (self._failures and time.monotonic() < self._retry_at):
            return self.memory.hit(counters, cost, now)
        tag = f"{KEY_PREFIX}:{{{counters[0][0]}}}"  # one hash tag: one slot, one call
        keys: list[str] = []
        args: list[Any] = [cost]
        for name, item in counters:
            seconds, index, elapsed = _window(item, now)
            keys += [f"{tag}:{name}:{seconds}:{index}", f"{tag}:{name}:{seconds}:{index - 1}"]
            args += [item.amount, seconds, elapsed]
        try:
            answer = await self._run(keys, args)
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return self.memory.hit(counters, cost, now)
        if self._failures:
            logger.warning("quota storage reachable again; counting is shared once more")
            self._failures = 0
        return _answer(counters, answer[0], answer[1:], now)

    async def _run(self, keys: Sequence[str], args: Sequence[Any]) -> list[int]:
        redis = self._redis
        if redis is None:  # the callers check first; this keeps the type honest
            raise RedisError("no Redis configured")
        try:
            result = await redis.evalsha(self._sha, len(keys), *keys, *args)
        except NoScriptError:  # first use, or Redis restarted or flushed its scripts
            result = await redis.eval(SLIDING_WINDOW, len(keys), *keys, *args)
        return [int(value) for value in result]

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
