"""Structured JSON logs, one object per line, with the request id on every line.

Secrets never reach a log line: the code never logs credentials, and this
formatter also scrubs anything shaped like one (bearer tokens, JWTs, API keys,
``client_secret=``/``password=`` pairs) as a second line of defence.
"""

from __future__ import annotations

import json
import logging
import logging.config
import re
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
        return redact(_dumps(event))


def _dumps(event: dict[str, Any]) -> str:
    """orjson (a tenth of ``json.dumps``' time), or ``json`` for what orjson refuses
    (integers beyond 64 bits)."""
    try:
        return orjson.dumps(event, default=str).decode("utf-8")
    except orjson.JSONEncodeError:
        return json.dumps(event, default=str)


def configure_logging(level: str = "INFO") -> None:
    """JSON on stderr for our loggers and the server's; uvicorn's access log is off
    because ``RequestContextMiddleware`` logs one richer event per request."""
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
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
                "uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
                "uvicorn.error": {"handlers": ["stderr"], "level": level, "propagate": False},
                "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
                "gunicorn.error": {"handlers": ["stderr"], "level": level, "propagate": False},
                "gunicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            },
        }
    )
