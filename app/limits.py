"""Rate limits with SlowAPI, shared by every worker and replica through Redis.

Keys: the authenticated principal on guarded routes (so one caller's usage never
throttles another), the client address on /token, /revoke and for failed
authentication. The client address is the TCP peer, or the proxy's
X-Forwarded-For only when the peer is in FORWARDED_ALLOW_IPS (see app.main).

Storage: ``memory://`` when REDIS_URL is unset (one process only), else Redis with
the moving-window strategy. If Redis fails, SlowAPI falls back to per-process
in-memory limits (each process enforces the full limit on its own, so the
effective limit is at most workers x limit) and re-checks Redis with back-off;
/readyz answers 503 meanwhile so operators see it. No request ever fails with a
500 because the limiter's storage is down.

Batch cost: a batch of n rows costs ``1 + n // 100`` units of the caller's quota,
so a 1000-row batch costs 11 single predictions: batches stay the cheap way to
send many rows, but cannot multiply a quota a thousandfold.
"""

from __future__ import annotations

import inspect
import logging
import math
import threading
import time
from pathlib import Path
from typing import Any, cast

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage, RedisStorage, Storage
from limits.strategies import MovingWindowRateLimiter
from limits.util import WindowStats
from redis.exceptions import NoScriptError
from slowapi import Limiter
from slowapi.errors import RateLimitExceeded
from starlette.concurrency import run_in_threadpool

from app.errors import problem_response
from app.settings import Settings

logger = logging.getLogger("app.limits")

SLOWAPI_CONFIG = Path(__file__).with_name("slowapi.env")
OAUTH_PATHS = ("/token", "/revoke")
BATCH_ROWS_PER_UNIT = 100
# Storage keys are (KEY_PREFIX, caller key, scope), as SlowAPI lays them out; every
# prediction route shares PREDICT_SCOPE, so /v1/usage can read the same window.
KEY_PREFIX = "housing-api"
PREDICT_SCOPE = "predict"


def client_ip(request: Request) -> str:
    """The peer address (already the real client when a trusted proxy forwarded it)."""
    return request.client.host if request.client else "unknown"


def caller_key(request: Request) -> str:
    """``<plan>|<principal id>`` for an authenticated caller; the plan picks the limit."""
    principal = getattr(request.state, "principal", None)
    if principal is None:
        return f"default|ip:{client_ip(request)}"
    return f"{principal.plan}|{principal.id}"


# SlowAPI calls inspect.signature on the key and limit functions on every request, to
# decide what to pass them; a precomputed __signature__ turns that into an attribute read.
client_ip.__signature__ = inspect.signature(client_ip)  # type: ignore[attr-defined]
caller_key.__signature__ = inspect.signature(caller_key)  # type: ignore[attr-defined]


def batch_cost(request: Request) -> int:
    cost: int = getattr(request.state, "rate_cost", 1)
    return cost


def cost_of_batch(rows: int) -> int:
    return 1 + rows // BATCH_ROWS_PER_UNIT


class PipelinedMovingWindow(MovingWindowRateLimiter):
    """The moving window, with one Redis round trip per guarded request instead of two.

    SlowAPI hits the caller's window and then reads it again for the quota headers.
    With Redis, :meth:`hit` sends limits' own acquire and read scripts in one pipeline
    and keeps the window it read for the header read that follows in the same thread
    (within a second). Anything else reads the storage as usual.
    """

    _FRESH_SECONDS = 1.0

    def __init__(self, storage: Storage) -> None:
        super().__init__(storage)
        self._seen = threading.local()

    def hit(self, item: RateLimitItem, *identifiers: str, cost: int = 1) -> bool:
        storage = self.storage
        if not isinstance(storage, RedisStorage):
            return super().hit(item, *identifiers, cost=cost)
        key = storage.prefixed_key(item.key_for(*identifiers))
        expiry, now = item.get_expiry(), time.time()
        acquire, read = storage.lua_acquire_moving_window, storage.lua_moving_window
        acquire_args, read_args = (now, item.amount, expiry, cost), (now - expiry, item.amount)
        # EVALSHA queued by hand: a pipeline holding Script objects first asks Redis
        # SCRIPT EXISTS, one more round trip on every request.
        pipe = cast(Any, storage.get_connection()).pipeline(transaction=False)
        pipe.evalsha(acquire.sha, 1, key, *acquire_args)
        pipe.evalsha(read.sha, 1, key, *read_args)
        try:
            acquired, window = pipe.execute()
        except NoScriptError:  # Redis restarted or flushed its scripts: neither ran
            acquired = acquire([key], list(acquire_args))  # these load them again
            window = read([key], list(read_args))
        start, count = (float(window[0]), int(window[1])) if window else (now, 0)
        stats = WindowStats(start + expiry, item.amount - count)
        self._seen.last = (item, identifiers, stats, time.monotonic())
        return bool(acquired)

    def get_window_stats(self, item: RateLimitItem, *identifiers: str) -> WindowStats:
        last = getattr(self._seen, "last", None)
        self._seen.last = None
        if last is not None:
            seen_item, seen_ids, stats, at = last
            fresh = time.monotonic() - at < self._FRESH_SECONDS
            if fresh and seen_item is item and seen_ids == identifiers:
                return stats  # type: ignore[no-any-return]
        return super().get_window_stats(item, *identifiers)


class QuotaLimiter(Limiter):
    """SlowAPI's Limiter, answering quota headers in both the X- and IETF styles.

    Successful answers carry X-RateLimit-{Limit,Remaining,Reset} and the IETF
    ``RateLimit-Policy`` / ``RateLimit`` fields (draft-ietf-httpapi-ratelimit-headers);
    429 answers add ``Retry-After``.
    """

    @property
    def storage(self) -> Storage:
        return cast(Storage, self._storage)

    def storage_ok(self) -> bool:
        try:
            return bool(self.storage.check())
        except Exception:
            return False

    def _inject_headers(self, response: Response, current_limit: Any) -> Response:
        if not (self.enabled and self._headers_enabled and current_limit is not None):
            return response
        if "RateLimit" in response.headers:
            return response  # a narrower throttle (e.g. per client name) already answered
        item, identifiers = current_limit
        try:
            stats = self.limiter.get_window_stats(item, *identifiers)
        except Exception:  # storage down: answer without quota rather than fail
            logger.warning("rate-limit storage unreachable while reading quota")
            return response
        set_quota_headers(response, item, stats.reset_time, stats.remaining)
        return response


def set_quota_headers(
    response: Response, item: RateLimitItem, reset_time: float, remaining: int
) -> None:
    response.headers.update(
        quota_headers(item, reset_time, remaining, limited=response.status_code == 429)
    )


def quota_headers(
    item: RateLimitItem, reset_time: float, remaining: int, *, limited: bool
) -> dict[str, str]:
    reset_in = max(0, math.ceil(reset_time - time.time()))
    policy = _policy_name(item)
    headers = {
        "X-RateLimit-Limit": str(item.amount),
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": str(math.ceil(reset_time)),
        "RateLimit-Policy": f'"{policy}";q={item.amount};w={item.get_expiry()}',
        "RateLimit": f'"{policy}";r={remaining};t={reset_in}',
    }
    if limited:
        headers["Retry-After"] = str(max(1, reset_in))
    return headers


class FailureThrottle:
    """Failures counted per name (a client id, a username, an address) in the limiter's
    storage, shared by every worker. Once a name reaches the limit it is refused, even
    with correct credentials, until the moving window lets old failures go.

    Reading the window on every authenticated request would cost a Redis round trip
    each time. So a worker that read a name's window at most half used remembers it as
    clear for ``CLEAR_SECONDS``, and forgets that the moment it sees the name fail
    itself. Failures elsewhere can thus go unseen here for at most ``CLEAR_SECONDS``:
    the limit is exceeded by at most one failure per worker and per ``CLEAR_SECONDS``
    (the failure that makes a worker forget), and only from below half the limit.
    """

    CLEAR_SECONDS = 1.0
    _MAX_REMEMBERED = 10_000

    def __init__(self, limiter: QuotaLimiter, limit: str, scope: str) -> None:
        self.limiter = limiter
        self.item = parse(limit)
        self.scope = scope
        self._clear_until: dict[str, float] = {}

    def refusal(self, name: str) -> dict[str, str] | None:
        """429 headers if ``name`` is throttled, else None."""
        if self._known_clear(name):
            return None
        try:
            stats = self.limiter.limiter.get_window_stats(self.item, KEY_PREFIX, self.scope, name)
        except Exception:  # storage down: the per-address limit still holds
            logger.warning("rate-limit storage unreachable; %s throttle skipped", self.scope)
            return None
        if stats.remaining >= 1:
            if stats.remaining * 2 >= self.item.amount:
                if len(self._clear_until) >= self._MAX_REMEMBERED:
                    self._clear_until.clear()
                self._clear_until[name] = time.monotonic() + self.CLEAR_SECONDS
            return None
        return quota_headers(self.item, stats.reset_time, stats.remaining, limited=True)

    def failed(self, name: str) -> None:
        self._clear_until.pop(name, None)
        try:
            self.limiter.limiter.hit(self.item, KEY_PREFIX, self.scope, name)
        except Exception:
            logger.warning("rate-limit storage unreachable; %s failure not counted", self.scope)

    async def refusal_async(self, name: str) -> dict[str, str] | None:
        """:meth:`refusal` from async code: inline when no storage read is due or the
        storage is in memory (microseconds), in a worker thread for a Redis read."""
        if self._local or self._known_clear(name):
            return self.refusal(name)
        return await run_in_threadpool(self.refusal, name)

    async def failed_async(self, name: str) -> None:
        if self._local:
            self.failed(name)
        else:
            self._clear_until.pop(name, None)  # at once, before the next request looks
            await run_in_threadpool(self.failed, name)

    def _known_clear(self, name: str) -> bool:
        until = self._clear_until.get(name)
        return until is not None and time.monotonic() < until

    @property
    def _local(self) -> bool:
        return isinstance(self.limiter.storage, MemoryStorage)


_PROBE = parse("1/second")


def limiter_shared_ok(limiter: QuotaLimiter) -> bool:
    """Whether this process counts in the shared storage right now (``/readyz``).

    False while the storage does not take a hit the way a request's hit is sent (the
    same strategy and round trip, with a cost of 0, which writes nothing); True with
    in-memory storage (REDIS_URL unset: nothing shared).
    SlowAPI leaves its per-process fallback only when a limited request comes and its
    back-off (1, 2, 4 ... 32 s) allows a check, so "Redis answers" and "this process
    counts in Redis" could be seconds apart: when the probe succeeds on the fallback,
    this switches the process back itself, so the two are one moment. The lifespan
    calls it every second, so every worker is back within a second of Redis.
    """
    if isinstance(limiter.storage, MemoryStorage):
        return True
    try:
        limiter._limiter.hit(_PROBE, KEY_PREFIX, "readiness", "probe", cost=0)
    except Exception:
        return False
    if limiter._storage_dead:  # SlowAPI's fallback flag; it has no public switch
        limiter._storage_dead = False
        logger.warning("rate-limit storage answers again: counting in it from now on")
    return True


def _policy_name(item: RateLimitItem) -> str:
    return f"{item.amount}-per-{item.get_expiry()}s"


def build_limiter(settings: Settings) -> QuotaLimiter:
    options: dict[str, Any] = {}
    if settings.redis_url:
        # Fail fast when Redis hangs: the in-memory fallback takes over.
        options = {"socket_timeout": 0.25, "socket_connect_timeout": 0.25}
    limiter = QuotaLimiter(
        key_func=client_ip,
        strategy="moving-window",
        storage_uri=settings.redis_url or "memory://",
        storage_options=options,
        headers_enabled=True,
        in_memory_fallback_enabled=True,
        swallow_errors=True,
        key_prefix=KEY_PREFIX,
        config_filename=str(SLOWAPI_CONFIG),
    )
    # SlowAPI builds its strategy from a name; ours answers the same, in fewer round trips.
    limiter._limiter = PipelinedMovingWindow(limiter.storage)
    return limiter


def predict_limit(settings: Settings) -> Any:
    """The caller's limit: its plan's override, else RATE_LIMIT_PREDICT."""

    def limit_for(key: str) -> str:
        plan = key.split("|", 1)[0]
        return settings.rate_limit_plans.get(plan, settings.rate_limit_predict)

    limit_for.__signature__ = inspect.signature(limit_for)  # type: ignore[attr-defined]
    return limit_for


async def rate_limited(request: Request, exc: Exception) -> Response:
    """429 with Retry-After and quota headers: OAuth shape on /token, a problem elsewhere."""
    detail = f"Rate limit exceeded ({cast(RateLimitExceeded, exc).detail}); retry later."
    response: Response
    if request.url.path in OAUTH_PATHS:
        response = JSONResponse(
            {"error": "slow_down", "error_description": detail},
            status_code=429,
            headers={"Cache-Control": "no-store"},
        )
    else:
        response = problem_response(429, detail, slug="rate-limited")
    limiter: QuotaLimiter = request.app.state.limiter
    limiter._inject_headers(response, getattr(request.state, "view_rate_limit", None))
    response.headers.setdefault("Retry-After", "1")
    return response
