"""One OpenTelemetry span per request, as a plain ASGI middleware (outermost).

The W3C ``traceparent`` a caller sends is accepted: the request's span continues the
caller's trace (its child), and the trace id goes into every JSON log line of the
request (``monitoring.logs.trace_id_var``). Child spans (authentication, rate limit,
model) come from ``monitoring.tracing.child_span`` where the work happens.

With tracing off (no OTEL_EXPORTER_OTLP_ENDPOINT) no span is made and the SDK is not
even imported: the middleware only reads the ``traceparent`` header for the log lines
(the caller's trace id, or a fresh random one), a few microseconds.
"""

from __future__ import annotations

import random
import re
from typing import Any

from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from monitoring.logs import span_id_var, trace_id_var
from monitoring.tracing import Tracing, current_tracer

# version 00: 2 hex version, 32 hex trace id, 16 hex parent id, 2 hex flags.
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
_INVALID_TRACE = "0" * 32
_PROPAGATOR = TraceContextTextMapPropagator()


def _route(scope: Scope) -> str | None:
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str):
        return path
    # Refused by the guard layer before FastAPI routed it: a guarded path is its template.
    guarded = scope.get("state", {}).get("guarded_route")
    return guarded if isinstance(guarded, str) else None


class TracingMiddleware:
    def __init__(self, app: ASGIApp, tracing: Tracing | None) -> None:
        self.app = app
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" and self.tracing is not None:
            await self.app(scope, receive, self._flushing_on_shutdown(send))
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.tracing is None:
            await self._untraced(scope, receive, send)
            return
        await self._traced(self.tracing, scope, receive, send)

    async def _untraced(self, scope: Scope, receive: Receive, send: Send) -> None:
        offered = _TRACEPARENT.fullmatch(Headers(scope=scope).get("traceparent", ""))
        if offered and offered.group(1) != _INVALID_TRACE:
            trace_id = offered.group(1)
        else:
            trace_id = f"{random.getrandbits(128):032x}"  # nosec B311  # correlation only
        token = trace_id_var.set(trace_id)
        try:
            await self.app(scope, receive, send)
        finally:
            trace_id_var.reset(token)

    async def _traced(self, tracing: Tracing, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        parent = _PROPAGATOR.extract({"traceparent": headers.get("traceparent", "")})
        method = scope["method"]
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        attributes: dict[str, Any] = {"http.request.method": method, "url.path": scope["path"]}
        with tracing.tracer.start_as_current_span(
            method, context=parent, kind=SpanKind.SERVER, attributes=attributes
        ) as span:
            context = span.get_span_context()
            tokens = (
                current_tracer.set(tracing.tracer),
                trace_id_var.set(f"{context.trace_id:032x}"),
                span_id_var.set(f"{context.span_id:016x}"),
            )
            try:
                await self.app(scope, receive, send_with_status)
            finally:
                route = _route(scope)
                if route is not None:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                span_id_var.reset(tokens[2])
                trace_id_var.reset(tokens[1])
                current_tracer.reset(tokens[0])

    def _flushing_on_shutdown(self, send: Send) -> Send:
        """Export the buffered spans once the app's shutdown has run."""
        tracing = self.tracing

        async def send_then_flush(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete" and tracing is not None:
                tracing.shutdown()
            await send(message)

        return send_then_flush
