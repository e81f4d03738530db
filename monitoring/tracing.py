"""OpenTelemetry tracing: set up from settings, and the one helper the code calls.

Off unless OTEL_EXPORTER_OTLP_ENDPOINT is set (or a test hands in an exporter): then
:func:`build_tracer` returns None, the tracing SDK and exporter are never imported, and
:func:`child_span` is a shared no-op context manager (a context-variable read per call).
On, spans go to the OTLP/HTTP exporter in batches from a background thread; the other
standard ``OTEL_*`` variables (headers, timeouts...) apply as the SDK reads them.

The request's span is ``app.tracing``'s (an ASGI middleware); the code below it marks
its steps with ``with child_span("authenticate"):``. Which tracer a span goes to is
the request's, carried in a context variable: nothing here is global, so two apps in
one process (the tests build many) never share spans.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from opentelemetry.trace import Tracer

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

SERVICE_NAME = "housing-api"
TRACES_PATH = "/v1/traces"  # what the OTLP/HTTP exporter appends to the base endpoint

# The tracer of the request being served, or None (tracing off): set by app.tracing.
current_tracer: ContextVar[Tracer | None] = ContextVar("current_tracer", default=None)
_OFF = contextlib.nullcontext()
P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class Tracing:
    """A tracer and the provider that owns its exporter (shut down with the app)."""

    tracer: Tracer
    provider: TracerProvider

    def shutdown(self) -> None:
        """Export what is still buffered, then stop the exporter's thread."""
        self.provider.shutdown()


def build_tracer(
    endpoint: str | None,
    *,
    exporter: SpanExporter | None = None,
    resource: Mapping[str, Any] | None = None,
) -> Tracing | None:
    """A tracer exporting to ``endpoint`` (OTLP/HTTP, e.g. ``http://collector:4318``) or
    to ``exporter`` (tests: the SDK's in-memory exporter, synchronously); None when
    neither is given."""
    if exporter is None and not endpoint:
        return None
    # Imported only when tracing is on: the SDK costs nothing otherwise.
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    attributes = {"service.name": SERVICE_NAME, **(resource or {})}
    provider = TracerProvider(resource=Resource.create(attributes))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        url = (endpoint or "").rstrip("/")
        if not url.endswith(TRACES_PATH):
            url += TRACES_PATH  # the base endpoint, as OTEL_EXPORTER_OTLP_ENDPOINT means it
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    return Tracing(provider.get_tracer("housing-api"), provider)


def child_span(name: str) -> contextlib.AbstractContextManager[Any]:
    """``with child_span("model"):`` a span under the request's, or nothing when off."""
    tracer = current_tracer.get()
    if tracer is None:
        return _OFF
    return tracer.start_as_current_span(name)


def traced(name: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """``@traced("authenticate")``: the whole function (sync or async) in a
    :func:`child_span`; a one-line mark on code that others own. The signature is the
    function's own (``functools.wraps``), so FastAPI still reads its dependencies."""

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def run_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                with child_span(name):
                    return await function(*args, **kwargs)

            return run_async  # type: ignore[return-value]  # same signature, async

        @functools.wraps(function)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            with child_span(name):
                return function(*args, **kwargs)

        return run

    return decorate
