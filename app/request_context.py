"""One middleware per request: its id, its timing, its metrics and its log event."""

from __future__ import annotations

import logging
import random
import re
import time
import uuid
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from monitoring.logs import request_id_var, trace_context
from monitoring.metrics import Metrics

logger = logging.getLogger("app.requests")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{8,128}")


def _new_request_id() -> str:
    """A random version-4 UUID, as ``uuid.uuid4()`` but without its system call.

    Request ids correlate log lines; they authorise nothing, so they need to be unique,
    not unpredictable. ``os.urandom`` on the event loop releases the GIL, and a worker
    thread that grabs it meanwhile stalls the loop for up to the switch interval.
    The ``random`` module is reseeded in every forked worker.
    """
    return uuid.UUID(int=random.getrandbits(128), version=4).hex  # nosec B311


def _route(scope: Scope) -> str:
    """The route template (bounded label cardinality), never the raw path."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    # Refused by the guard layer before FastAPI routed it: a guarded path is its template.
    guarded = scope.get("state", {}).get("guarded_route")
    return guarded if isinstance(guarded, str) else "unmatched"


class RequestContextMiddleware:
    """Accepts a well-formed ``X-Request-ID`` (Nginx sets one) or makes one, returns
    it with ``Server-Timing`` on every answer, and records one metrics sample and one
    JSON log event per request: route, status, latency, principal, model version."""

    def __init__(self, app: ASGIApp, metrics: Metrics, server_timing: bool = True) -> None:
        self.app = app
        self.metrics = metrics
        self.server_timing = server_timing  # SERVER_TIMING_ENABLED, or development
        # Routes are templates and statuses few, so this stays small.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = Headers(scope=scope).get("x-request-id", "")
        request_id = offered if _REQUEST_ID.fullmatch(offered) else _new_request_id()
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_context(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = request_id
                if self.server_timing:
                    elapsed_ms = (time.perf_counter() - started) * 1000
                    headers.append("Server-Timing", f"app;dur={elapsed_ms:.2f}")
            await send(message)

        try:
            await self.app(scope, receive, send_with_context)
        finally:
            self._record(scope, status, time.perf_counter() - started, request_id)
            request_id_var.reset(token)

    def _record(self, scope: Scope, status: int, elapsed: float, request_id: str) -> None:
        route, method = _route(scope), scope["method"]
        state: dict[str, Any] = scope.get("state", {})
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:  # labels() hashes and locks: once per label set, not per request
            children = self._children[key] = (
                self.metrics.requests.labels(route, method, str(status)),
                self.metrics.latency.labels(route, method),
            )
        children[0].inc()
        children[1].observe(elapsed)
        failure = state.get("auth_failure")
        if failure is not None:
            self.metrics.auth_failures.labels(str(failure)).inc()
        if status == 429:
            self.metrics.rate_limited.labels(route).inc()
        if state.get("shed"):
            self.metrics.shed.inc()
        rows = state.get("predicted_rows")
        if rows:
            self.metrics.predictions.labels(state.get("model_version", "unknown")).inc(rows)
        principal = state.get("principal")
        logger.info(
            "request",
            extra={
                "route": route,
                "method": method,
                "status": status,
                "latency_ms": round(elapsed * 1000, 3),
                "principal": principal.id if principal is not None else None,
                "model_version": state.get("model_version"),
                "auth_failure": failure,
                "request_id": request_id,
                **trace_context(),
            },
        )
