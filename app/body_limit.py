"""The request body limit of the routes outside the guard layer, as plain ASGI middleware.

The prediction routes get the same checks from ``app.guard``, after authentication.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from app.guard import BodyDeadline, declared_length_refusal, send_problem


class MaxBodySizeMiddleware:
    """Refuse request bodies over ``max_bytes`` with 413, and slower than
    ``read_timeout`` for the whole body with 408.

    A declared ``Content-Length`` over the limit is refused before the app runs;
    chunked or lying bodies are counted as they stream and stopped at the first
    byte past the limit, so a client cannot make us buffer more than we allow.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        read_timeout: float,
        skip_paths: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout = read_timeout
        self.skip_paths = skip_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.skip_paths:
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        refused = declared_length_refusal(declared, self.max_bytes)
        if refused is not None:
            status, detail, slug = refused
            await send_problem(send, status, detail, slug=slug, headers={"Connection": "close"})
            return
        body = BodyDeadline(receive, self.max_bytes, self.read_timeout)
        try:
            await self.app(scope, body, send)
        finally:
            body.close()
