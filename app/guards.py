"""Guards that run before routing, as plain ASGI middleware."""

from __future__ import annotations

import anyio
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import problem_response


class MaxBodySizeMiddleware:
    """Refuse request bodies over ``max_bytes`` with 413.

    A declared ``Content-Length`` over the limit is refused before the app runs;
    chunked or lying bodies are counted as they stream and stopped at the first
    byte past the limit, so a client cannot make us buffer more than we allow.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, read_timeout: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout = read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        declared = Headers(scope=scope).get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            response = problem_response(
                413 if declared.isdigit() else 400,
                self._detail() if declared.isdigit() else "Content-Length is not a number.",
                slug="content-too-large" if declared.isdigit() else None,
                headers={"Connection": "close"},
            )
            await response(scope, receive, send)
            return

        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            # A slow client may not hold a worker: each chunk must arrive in time.
            with anyio.move_on_after(self.read_timeout) as deadline:
                message = await receive()
            if deadline.cancelled_caught:
                raise HTTPException(408, "The request body arrived too slowly.")
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI re-raises an HTTPException from body parsing (any
                    # other error would become a 400); our handler makes it a problem.
                    raise HTTPException(413, self._detail(), headers={"Connection": "close"})
            return message

        await self.app(scope, counting_receive, send)

    def _detail(self) -> str:
        return f"The request body exceeds the limit of {self.max_bytes} bytes."


class LoadSheddingMiddleware:
    """At most ``limit`` requests doing model work per process; the rest get 503 at once.

    Counting happens as a request arrives, so an overload answers ``Retry-After``
    immediately instead of growing an unbounded queue (and latency) behind the model.
    """

    def __init__(self, app: ASGIApp, limit: int, path_prefixes: tuple[str, ...]) -> None:
        self.app = app
        self.limit = limit
        self.path_prefixes = path_prefixes
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.path_prefixes):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            scope.setdefault("state", {})["shed"] = True
            response = problem_response(
                503,
                "The service is at capacity; retry shortly.",
                slug="overloaded",
                headers={"Retry-After": "1"},
            )
            await response(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
