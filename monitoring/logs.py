"""Structured JSON logs, one object per line, with the request and trace ids on every
line of a request.

Every process logs through :func:`logging_config`: the app and uvicorn
(:func:`configure_logging`), and gunicorn's master too (``logconfig_dict`` in
``app.gunicorn_conf``), so a server's whole stderr is JSON lines.

Secrets never reach a log line: the code never logs credentials, and this
formatter also scrubs anything shaped like one (bearer tokens, JWTs, API keys,
``client_secret=``/``password=`` pairs) as a second line of defence.
"""

from __future__ import annotations

import atexit
import collections
import copy
import json
import logging
import logging.config
import logging.handlers
import re
import sys
import threading
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
# The W3C trace and span ids of the request (set by app.tracing), 32 and 16 hex digits.
trace_id_var: ContextVar[str | None] = ContextVar("trace_id", default=None)
span_id_var: ContextVar[str | None] = ContextVar("span_id", default=None)

REDACTED = "[REDACTED]"
# Scoped flags ("(?i:...)"), so that the patterns also combine into one alternation.
_SECRET_SHAPES = (
    r"\b(?i:bearer)\s+[A-Za-z0-9._~+/=-]+",
    r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",  # JWT
    r"\bhpa_[a-z2-7]{12}_[A-Za-z0-9_-]{20,}",  # API key
    r"\b(?i:client_secret|password|api_key|secret)=[^&\s]+",
    r"\b(?i:basic)\s+[A-Za-z0-9+/=]{8,}",
)
SECRET_PATTERNS: tuple[re.Pattern[str], ...] = tuple(re.compile(s) for s in _SECRET_SHAPES)
# One pass over each line instead of one per pattern: this runs on every request's event.
_ANY_SECRET = re.compile("|".join(f"(?:{shape})" for shape in _SECRET_SHAPES))
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
# uvicorn adds ``color_message``, the message with ANSI colour escapes, for its own
# console formatter: never copied into an event.
_DROPPED = _STANDARD | {"color_message"}


def trace_context() -> dict[str, str]:
    """The request's trace and span ids, for a record's ``extra`` (the formatter reads
    them at emission anyway; a record formatted later, e.g. captured, keeps them)."""
    ids = {"trace_id": trace_id_var.get(), "span_id": span_id_var.get()}
    return {name: value for name, value in ids.items() if value is not None}


# Every secret shape contains one of these (lower-cased): most lines contain none, and
# checking for them is a tenth of the regular expression's cost.
_SECRET_HINTS = ("bearer", "eyj", "hpa_", "=", "basic")


def redact(text: str) -> str:
    lowered = text.lower()
    if not any(hint in lowered for hint in _SECRET_HINTS):
        return text
    return _ANY_SECRET.sub(REDACTED, text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id is not None:
            event["request_id"] = request_id
        event.update(trace_context())
        for key, value in record.__dict__.items():
            if key not in _DROPPED and not key.startswith("_"):
                event[key] = value
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:  # formatted by BackgroundHandler on the logging thread
            event["exception"] = record.exc_text
        return redact(_dumps(event))


def _dumps(event: dict[str, Any]) -> str:
    """orjson (a tenth of ``json.dumps``' time), or ``json`` for what orjson refuses
    (integers beyond 64 bits)."""
    try:
        return orjson.dumps(event, default=str).decode("utf-8")
    except orjson.JSONEncodeError:
        return json.dumps(event, default=str)


class HarmlessSocketClose(logging.Filter):
    """Drops gunicorn's ``Error while closing socket [Errno 9] Bad file descriptor``.

    The cause, in each worker at shutdown: uvicorn hands gunicorn's listening-socket
    wrappers to the event loop (``loop.create_server(sock=...)``); uvloop, the loop
    uvicorn[standard] runs, closes the descriptor itself with libuv when the server
    closes, then calls the wrapper's ``close()``, whose inner ``socket.close()`` finds
    the descriptor already gone (EBADF) and logs it. The socket is closed either way
    (the master keeps its own descriptor), so the line reports nothing. Only that exact
    message with errno 9 is dropped; any other socket error is still logged.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.msg == "Error while closing socket %s"
            and "[Errno 9]" in str(record.args[0] if isinstance(record.args, tuple) else "")
        )


def logging_config(level: str = "INFO") -> dict[str, Any]:
    """The ``logging.config.dictConfig`` of every process: JSON on stderr for ours and the
    servers' loggers. uvicorn's and gunicorn's access logs are off because
    ``RequestContextMiddleware`` logs one richer event per request."""
    server = {"handlers": ["stderr"], "level": level, "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"harmless_socket_close": {"()": HarmlessSocketClose}},
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            "uvicorn": server,
            "uvicorn.error": server,
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            "gunicorn.error": {**server, "filters": ["harmless_socket_close"]},
            "gunicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            "py.warnings": server,
        },
    }


class BackgroundHandler(logging.handlers.QueueHandler):
    """Hands records to :func:`configure_logging`'s writer thread: building the JSON,
    redacting it and writing it happen there, off the event loop.

    Unlike the standard ``prepare``, the record keeps its ``extra`` fields, takes the
    request and trace ids along (context variables do not cross threads), and the
    traceback travels as text, so the formatter on the other side writes the same event
    it would have written here.
    """

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        prepared = copy.copy(record)
        prepared.msg = record.getMessage()
        prepared.args = None
        if record.exc_info:
            prepared.exc_text = _TRACEBACKS.formatException(record.exc_info)
            prepared.exc_info = None
        ids = trace_context()
        request_id = request_id_var.get()
        if request_id is not None:
            ids["request_id"] = request_id
        for name, value in ids.items():
            if not hasattr(prepared, name):
                setattr(prepared, name, value)
        return prepared


_TRACEBACKS = logging.Formatter()


class BatchWriter:
    """The writer thread: every ``interval`` seconds it formats whatever records were
    queued and writes them in one ``write``.

    It is never woken per record (a ``deque`` append takes no lock and signals nobody):
    with one worker, waking a thread for each request's event cost more CPU than
    formatting it. A line reaches stderr at most ``interval`` after it was logged.
    """

    def __init__(self, stream: Any, formatter: logging.Formatter, interval: float = 0.02) -> None:
        self.records: collections.deque[logging.LogRecord] = collections.deque()
        self._stream = stream
        self._formatter = formatter
        self._interval = interval
        self._stopping = threading.Event()
        self._draining = False
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)

    def put_nowait(self, record: logging.LogRecord) -> None:  # QueueHandler's queue API
        self.records.append(record)

    def empty(self) -> bool:
        """Whether everything queued has been written (as ``queue.Queue.empty``)."""
        return not self.records and not self._draining

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(self._interval):
            self.drain()

    def drain(self) -> None:
        self._draining = True
        try:
            self._write_queued()
        finally:
            self._draining = False

    def _write_queued(self) -> None:
        lines = []
        while self.records:
            record = self.records.popleft()
            try:
                lines.append(self._formatter.format(record))
            except Exception:  # one bad record must not take the others with it
                lines.append(_dumps({"level": "error", "message": "unformattable log record"}))
        if lines:
            self._stream.write("\n".join(lines) + "\n")
            self._stream.flush()

    def stop(self) -> None:
        """Write out everything queued, then end the thread."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()
        self.drain()


_listener: BatchWriter | None = None


def configure_logging(level: str = "INFO") -> None:
    """JSON logs (:func:`logging_config`) for this process, warnings included, written
    by a background thread (:class:`BackgroundHandler`, :class:`BatchWriter`).

    Nothing queued is lost on a clean exit: :func:`flush_logs` (the app's shutdown,
    and ``atexit``) writes out the queue and goes back to writing synchronously.
    """
    global _listener
    flush_logs()
    config = logging_config(level)
    writer = BatchWriter(sys.stderr, JsonFormatter())
    config["handlers"]["stderr"] = {"()": BackgroundHandler, "queue": writer}
    logging.config.dictConfig(config)
    logging.captureWarnings(True)
    _listener = writer
    writer.start()
    atexit.register(flush_logs)


def flush_logs() -> None:
    """Write every queued event, stop the writer thread, and log synchronously from
    then on (a worker's last lines after the app shut down)."""
    global _listener
    if _listener is None:
        return
    listener, _listener = _listener, None
    listener.stop()
    level = logging.getLevelName(logging.getLogger().level)
    logging.config.dictConfig(logging_config(level))
