"""Structured JSON logs, one object per line, with the request id on every line.

Secrets never reach a log line: the code never logs credentials, and this
formatter also scrubs anything shaped like one (bearer tokens, JWTs, API keys,
``client_secret=``/``password=`` pairs) as a second line of defence.
"""

from __future__ import annotations

import atexit
import copy
import json
import logging
import logging.config
import logging.handlers
import queue
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

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


def redact(text: str) -> str:
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
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
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


class BackgroundHandler(logging.handlers.QueueHandler):
    """Hands records to :func:`configure_logging`'s writer thread: building the JSON,
    redacting it and writing it happen there, off the event loop.

    Unlike the standard ``prepare``, the record keeps its ``extra`` fields and the
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
        return prepared


_TRACEBACKS = logging.Formatter()
_listener: logging.handlers.QueueListener | None = None


def configure_logging(level: str = "INFO") -> None:
    """JSON on stderr for our loggers and the server's, written by a background thread
    (:class:`BackgroundHandler`); uvicorn's access log is off because
    ``RequestContextMiddleware`` logs one richer event per request.

    Nothing queued is lost on a clean exit: :func:`flush_logs` (the app's shutdown,
    and ``atexit``) writes out the queue and goes back to writing synchronously.
    """
    global _listener
    flush_logs()
    _dict_config(level, "background")
    writer = logging.StreamHandler(sys.stderr)
    writer.setFormatter(JsonFormatter())
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    for handler in logging.getLogger().handlers:
        if isinstance(handler, BackgroundHandler):
            handler.queue = records
    _listener = logging.handlers.QueueListener(records, writer, respect_handler_level=False)
    _listener.start()
    atexit.register(flush_logs)


def flush_logs() -> None:
    """Write every queued event, stop the writer thread, and log synchronously from
    then on (a worker's last lines after the app shut down)."""
    global _listener
    if _listener is None:
        return
    listener, _listener = _listener, None
    listener.stop()
    _dict_config(logging.getLevelName(logging.getLogger().level), "stderr")


def _dict_config(level: str, handler: str) -> None:
    handlers: dict[str, Any] = {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "stream": "ext://sys.stderr",
        },
        "background": {"()": BackgroundHandler, "queue": queue.SimpleQueue()},
    }
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"json": {"()": JsonFormatter}},
            "handlers": {handler: handlers[handler]},
            "root": {"handlers": [handler], "level": level},
            "loggers": {
                "uvicorn": {"handlers": [handler], "level": level, "propagate": False},
                "uvicorn.error": {"handlers": [handler], "level": level, "propagate": False},
                "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
                "gunicorn.error": {"handlers": [handler], "level": level, "propagate": False},
                "gunicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            },
        }
    )
