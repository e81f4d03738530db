"""The guard layer: who may call a prediction route, and how much, before its body is read.

One pure-ASGI layer in front of FastAPI for the guarded routes, in this order: a
declared ``Content-Length`` over the limit (413); the credentials, every one presented
valid (401, with today's problem bodies and ``WWW-Authenticate``); the scope (403); the
caller's quota (429 with ``Retry-After`` and the RateLimit fields); a body declared as
anything but JSON (415); then the load-shedding budget (503) is checked. Only then is
the body read, against one deadline for the whole body (408), a size limit for chunked
or lying bodies (413), and a per-worker cap on bodies still arriving after their first
chunk (503). A request enters the model's budget (``in_flight``,
MAX_INFLIGHT_PREDICTIONS) only once its body is whole: a slow sender, anonymous or
paying, holds no place a prediction needs. Each rejection is a small pre-encoded
problem answer: refusing costs less than answering.

FastAPI still routes, validates the body, runs the handler and writes the OpenAPI
document, where the guarded routes declare their security requirement
(``app.deps.PREDICTOR_SECURITY``) without a dependency to solve per request: the
handlers read the principal put in the request scope here. Requests of other routes
pass through.

A batch costs ``1 + rows // 100`` of the quota, which is known only once its body is
validated: the guard makes sure something is left (a read, cost 0) and the batch route
charges the whole cost after validation (``app.routes.predict``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import PROBLEM_BASE, PROBLEM_JSON, STATUS_TITLES, STORE_UNAVAILABLE, ApiError
from app.json_body import JSON_ONLY, is_json_media_type
from app.quota import QuotaAnswer
from app.security import Presented, identify, require_scopes
from app.state import Services
from auth.errors import StoreUnavailable


@dataclass(frozen=True, slots=True)
class Policy:
    """What a guarded route needs: one of ``scopes``, and ``cost`` units of quota up
    front (0: only check that some is left; the route charges the rest)."""

    scopes: frozenset[str]
    cost: int


@lru_cache(maxsize=256)
def _problem(status: int, slug: str | None, title: str, detail: str) -> bytes:
    return orjson.dumps(
        {
            "type": PROBLEM_BASE + slug if slug else "about:blank",
            "title": title,
            "status": status,
            "detail": detail,
        }
    )


async def send_problem(
    send: Send,
    status: int,
    detail: str,
    *,
    slug: str | None = None,
    title: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> None:
    body = _problem(status, slug, title or STATUS_TITLES.get(status, "Error"), detail)
    raw = [
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class BodyDeadline:
    """``receive`` with one deadline for the whole body and a size limit.

    One timer per request (``loop.call_later``), not a cancel scope per chunk: when it
    fires while a chunk is awaited, the waiting task is cancelled and the read answers
    408; a body read after it fired answers 408 at once. Errors are Starlette
    ``HTTPException``s: the guard answers them itself, and behind ``BodyLimit`` FastAPI
    re-raises them from body parsing and the app's handler answers them.
    """

    __slots__ = ("_done", "_expired", "_limit", "_receive", "_received", "_timer", "_waiting")

    def __init__(self, receive: Receive, max_bytes: int, seconds: float) -> None:
        self._receive = receive
        self._limit = max_bytes
        self._received = 0
        self._done = False
        self._expired = False
        self._waiting: asyncio.Task[Any] | None = None
        self._timer = asyncio.get_running_loop().call_later(seconds, self._expire)

    def _expire(self) -> None:
        self._expired = True
        if self._waiting is not None:
            self._waiting.cancel("body deadline")

    def close(self) -> None:
        self._timer.cancel()

    @property
    def complete(self) -> bool:
        return self._done

    async def __call__(self) -> Message:
        if self._done:
            return await self._receive()  # e.g. waiting for a disconnect after the body
        if self._expired:
            raise HTTPException(408, "The request body arrived too slowly.")
        self._waiting = asyncio.current_task()
        try:
            message = await self._receive()
        except asyncio.CancelledError:
            if not self._expired or self._waiting is None:
                raise
            self._waiting.uncancel()
            raise HTTPException(408, "The request body arrived too slowly.") from None
        finally:
            self._waiting = None
        if message["type"] == "http.request":
            self._received += len(message.get("body", b""))
            if self._received > self._limit:
                self.close()
                raise HTTPException(413, too_large(self._limit), headers={"Connection": "close"})
            if message.get("more_body", False):
                return message
        self._done = True
        self.close()
        return message


def rate_limited(answer: QuotaAnswer) -> str:
    return f"Rate limit exceeded ({answer.limit} per {answer.window} second(s)); retry later."


def too_large(limit: int) -> str:
    return f"The request body exceeds the limit of {limit} bytes."


def declared_length_refusal(value: bytes | None, limit: int) -> tuple[int, str, str | None] | None:
    """(status, detail, slug) when a declared ``Content-Length`` is refused, else None."""
    if value is None:
        return None
    if not value.isdigit():
        return 400, "Content-Length is not a number.", None
    if int(value) > limit:
        return 413, too_large(limit), "content-too-large"
    return None


class PredictionGuard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        services: Services,
        routes: Mapping[str, Policy],
    ) -> None:
        self.app = app
        self.services = services
        self.routes = dict(routes)
        settings = services.settings
        self.max_bytes = settings.max_body_bytes
        self.body_seconds = settings.body_read_timeout_seconds
        self.max_in_flight = settings.max_inflight_predictions
        self.max_reading = settings.max_concurrent_body_reads
        self.in_flight = 0
        self.reading = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        policy = self.routes.get(scope["path"]) if scope["type"] == "http" else None
        if policy is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        state["guarded_route"] = scope["path"]
        length: bytes | None = None
        content_type = ""
        authorization: list[str] = []
        api_key: list[str] = []
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization.append(value.decode("latin-1"))
            elif name == b"x-api-key":
                api_key.append(value.decode("latin-1"))
            elif name == b"content-length":
                length = value
            elif name == b"content-type":
                content_type = value.decode("latin-1")
        refused = declared_length_refusal(length, self.max_bytes)
        if refused is not None:
            status, detail, slug = refused
            await send_problem(send, status, detail, slug=slug, headers={"Connection": "close"})
            return
        client = scope.get("client")
        ip = client[0] if client else "unknown"
        try:
            principal = await identify(
                self.services, Presented(tuple(authorization), tuple(api_key)), ip, state
            )
            require_scopes(principal, policy.scopes, state)
        except ApiError as error:
            await send_problem(
                send,
                error.status,
                error.detail,
                slug=error.slug,
                title=error.title,
                headers=error.headers,
            )
            return
        except StoreUnavailable as outage:  # a credential it had to read, store down
            await send_problem(
                send,
                503,
                STORE_UNAVAILABLE,
                slug="store-unavailable",
                headers={"Retry-After": str(outage.retry_after)},
            )
            return
        answer = await self.services.budget.charge(principal, policy.cost)
        if policy.cost == 0 and answer.remaining < 1:
            answer = replace(answer, allowed=False)
        if not answer.allowed:
            await send_problem(
                send, 429, rate_limited(answer), slug="rate-limited", headers=answer.headers()
            )
            return
        state["quota"] = answer
        if not is_json_media_type(content_type):
            await send_problem(send, 415, JSON_ONLY, slug="unsupported-media-type")
            return
        if self.in_flight >= self.max_in_flight:  # refuse before reading, when we can
            await self._shed(send, state, "The service is at capacity; retry shortly.")
            return
        deadline = BodyDeadline(receive, self.max_bytes, self.body_seconds)
        try:
            body = await self._read(deadline)
        except HTTPException as error:  # 408: too slow; 413: too large
            await send_problem(send, error.status_code, error.detail, headers=error.headers)
            return
        finally:
            deadline.close()
        if body is None:
            await self._shed(
                send, state, "Too many request bodies are being received; retry shortly."
            )
            return
        if body["type"] != "http.request":
            return  # the caller left before its body was complete: nobody to answer
        if self.in_flight >= self.max_in_flight:
            await self._shed(send, state, "The service is at capacity; retry shortly.")
            return
        self.in_flight += 1
        try:
            await self.app(scope, _replay(body, receive), _with_quota(send, state))
        finally:
            self.in_flight -= 1

    async def _read(self, deadline: BodyDeadline) -> Message | None:
        """The whole body as one message, or None when no reading place is free.

        A body that arrives with its first chunk (nearly every caller's) takes no place;
        one still arriving after it needs one of MAX_CONCURRENT_BODY_READS for as long
        as it takes. No request counts against the model's budget (``in_flight``) while
        its body arrives: slow senders, paying or not, cannot starve the predictions.
        """
        first = await deadline()
        if deadline.complete:
            return first
        if self.reading >= self.max_reading:
            return None
        self.reading += 1
        try:
            chunks = [first.get("body", b"")]
            while not deadline.complete:
                message = await deadline()
                if message["type"] != "http.request":
                    return message
                chunks.append(message.get("body", b""))
        finally:
            self.reading -= 1
        return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

    @staticmethod
    async def _shed(send: Send, state: dict[str, Any], detail: str) -> None:
        state["shed"] = True
        await send_problem(send, 503, detail, slug="overloaded", headers={"Retry-After": "1"})


def _replay(body: Message, receive: Receive) -> Receive:
    """The body already read, then the transport (a disconnect, after the answer)."""
    pending: list[Message] = [body]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


def _with_quota(send: Send, state: dict[str, Any]) -> Send:
    """Adds the RateLimit fields of the caller's quota to the answer (a 429 has its own)."""

    async def send_with_quota(message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] != 429:
            quota: QuotaAnswer = state["quota"]  # a batch route may have replaced it
            message["headers"] = list(message.get("headers", [])) + [
                (k.lower().encode("latin-1"), v.encode("latin-1"))
                for k, v in quota.headers().items()
            ]
        await send(message)

    return send_with_quota
