"""Rate limits with SlowAPI, shared by every worker and replica through Redis.

SlowAPI is the limiter of record: its ``Limiter`` and limit strings configure every
route. The prediction routes are counted by :class:`PredictionBudget` (``app.quota``,
called by the guard layer, one script call per request); the others by SlowAPI's
decorators.

Keys: the caller's account on guarded routes (``auth.quota.quota_subjects`` decides:
one budget for every client, user and key of an account, so one account's usage never
throttles another and minting keys gains nothing; a credential's own lower plan is a
second counter, a cap); the client address for failed authentication; on /token and
/revoke, the address and the (address, client) pair for failures and the client for
issuance (``auth.oauth``). The client address is the TCP peer, or the proxy's
X-Forwarded-For only when the peer is in FORWARDED_ALLOW_IPS (see app.main).

Storage: ``memory://`` when REDIS_URL is unset (one process only), else Redis with
SlowAPI's moving-window strategy. If Redis fails, SlowAPI falls back to per-process
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
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from slowapi import Limiter
from slowapi.errors import RateLimitExceeded
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import problem_response
from app.quota import Counter, Quota, QuotaAnswer
from app.settings import Settings
from auth.principal import Principal
from auth.quota import QuotaSubject, key_plan, plan_limit, quota_subjects
from monitoring.tracing import traced

logger = logging.getLogger("app.limits")
F = TypeVar("F", bound=Callable[..., Any])

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


def _subjects(request: Request) -> list[QuotaSubject] | None:
    """The caller's counters (``auth.quota.quota_subjects``), worked out once per request."""
    principal = getattr(request.state, "principal", None)
    if principal is None:
        return None
    subjects: list[QuotaSubject] | None = getattr(request.state, "quota_subjects", None)
    if subjects is None:
        subjects = quota_subjects(principal, request.app.state.services.settings)
        request.state.quota_subjects = subjects
    return subjects


def caller_key(request: Request) -> str:
    """``<plan>|account:<name>`` for an authenticated caller, its account's budget;
    the plan picks the limit."""
    subjects = _subjects(request)
    if subjects is None:
        return f"default|ip:{client_ip(request)}"
    return subjects[0].key


# SlowAPI calls inspect.signature on the key and limit functions on every request, to
# decide what to pass them; a precomputed __signature__ turns that into an attribute read.
client_ip.__signature__ = inspect.signature(client_ip)  # type: ignore[attr-defined]
caller_key.__signature__ = inspect.signature(caller_key)  # type: ignore[attr-defined]


def cost_of_batch(rows: int) -> int:
    return 1 + rows // BATCH_ROWS_PER_UNIT


class QuotaLimiter(Limiter):
    """SlowAPI's Limiter, with a readiness probe of its storage.

    Its own header injection is off: :class:`QuotaHeaders` answers the quota in both
    the X- and the IETF styles from the limit SlowAPI recorded for the request.
    """

    def storage_ok(self) -> bool:
        try:
            return bool(self.limiter.storage.check())
        except Exception:
            return False


class QuotaHeaders:
    """X-RateLimit-{Limit,Remaining,Reset} and the IETF ``RateLimit-Policy`` /
    ``RateLimit`` fields (draft-ietf-httpapi-ratelimit-headers) on every answer of a
    SlowAPI-limited route, read through SlowAPI's public surface: the limit it records
    as ``request.state.view_rate_limit`` and the strategy its ``Limiter.limiter`` holds.
    Answers that already carry the fields (a guarded route, a throttle's 429) are left.
    """

    def __init__(self, app: ASGIApp, limiter: QuotaLimiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_quota(message: Message) -> None:
            if message["type"] == "http.response.start":
                current = scope.get("state", {}).get("view_rate_limit")
                headers = MutableHeaders(scope=message)
                if current is not None and "ratelimit" not in headers:
                    quota = await self._quota_async(current, limited=message["status"] == 429)
                    for name, value in quota.items():
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_quota)

    async def _quota_async(
        self, current: tuple[RateLimitItem, list[str]], *, limited: bool
    ) -> dict[str, str]:
        """Inline for the in-memory storage; a Redis read in a worker thread, never on
        the event loop (a hung Redis would stall every request of the worker)."""
        if isinstance(self.limiter.limiter.storage, MemoryStorage):
            return self._quota(current, limited=limited)
        return await run_in_threadpool(self._quota, current, limited=limited)

    def _quota(self, current: tuple[RateLimitItem, list[str]], *, limited: bool) -> dict[str, str]:
        item, identifiers = current
        try:
            stats = self.limiter.limiter.get_window_stats(item, *identifiers)
        except Exception:  # storage down: answer without quota rather than fail
            logger.warning("rate-limit storage unreachable while reading quota")
            return {}
        return quota_headers(item, stats.reset_time, stats.remaining, limited=limited)


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
        return isinstance(self.limiter.limiter.storage, MemoryStorage)


class IssuanceBudget:
    """Successes counted per name (a client, a user) in the limiter's storage, shared by
    every worker: ``spend`` takes one unit, or says there is none left (with the quota
    fields either way). With Redis, one pipelined round trip."""

    def __init__(self, limiter: QuotaLimiter, limit: str, scope: str) -> None:
        self.limiter = limiter
        self.item = parse(limit)
        self.scope = scope

    def spend(self, name: str) -> tuple[bool, dict[str, str]]:
        try:
            allowed = self.limiter.limiter.hit(self.item, KEY_PREFIX, self.scope, name)
            stats = self.limiter.limiter.get_window_stats(self.item, KEY_PREFIX, self.scope, name)
        except Exception:  # storage down: the failure throttles still hold
            logger.warning("rate-limit storage unreachable; %s not counted", self.scope)
            return True, {}
        return allowed, quota_headers(
            self.item, stats.reset_time, stats.remaining, limited=not allowed
        )

    async def spend_async(self, name: str) -> tuple[bool, dict[str, str]]:
        if isinstance(self.limiter.limiter.storage, MemoryStorage):
            return self.spend(name)
        return await run_in_threadpool(self.spend, name)


def half_limit(limit: str) -> str:
    """Half of ``limit`` (rounded up, at least 1) over the same window."""
    item = parse(limit)
    return f"{max(1, (item.amount + 1) // 2)}/{item.multiples} {item.GRANULARITY.name}"


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
    if isinstance(limiter._limiter.storage, MemoryStorage):
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
        headers_enabled=False,  # QuotaHeaders answers them
        in_memory_fallback_enabled=True,
        swallow_errors=True,
        key_prefix=KEY_PREFIX,
        config_filename=str(SLOWAPI_CONFIG),
    )
    return limiter


class PredictionBudget:
    """The prediction quota of a caller, as ``auth.quota.quota_subjects`` decides: its
    account's budget (one across v1 and v2, singles and batches, every credential of
    the account) and its credential's own cap when it has one, both in one hit."""

    def __init__(self, quota: Quota, settings: Settings) -> None:
        self.quota = quota
        self._settings = settings
        self._items: dict[str, RateLimitItem] = {}

    def counters(self, principal: Principal) -> list[Counter]:
        return [
            (f"{PREDICT_SCOPE}:{subject.key}", self._item(subject.limit))
            for subject in quota_subjects(principal, self._settings)
        ]

    def _item(self, limit: str) -> RateLimitItem:
        item = self._items.get(limit)
        if item is None:
            item = self._items[limit] = parse(limit)
        return item

    @traced("rate_limit")
    async def charge(self, principal: Principal, cost: int) -> QuotaAnswer:
        """One hit (cost 0: a read) that also answers the RateLimit fields."""
        return await self.quota.hit(self.counters(principal), cost)


def predict_limit(settings: Settings) -> Any:
    """A counter's limit: its plan's override, else RATE_LIMIT_PREDICT (``auth.quota``)."""

    def limit_for(key: str) -> str:
        return plan_limit(key_plan(key), settings)

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
    response.headers.setdefault("Retry-After", "1")  # QuotaHeaders adds the precise one
    return response
