"""What each operation can answer besides success, declared once for OpenAPI."""

from __future__ import annotations

from typing import Any

from app.errors import PROBLEM_JSON

_PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "field": {"type": "string"},
                    "location": {"type": "array", "items": {"type": "string"}},
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
    "additionalProperties": True,
}

_DESCRIPTIONS: dict[int, str] = {
    400: "Malformed request.",
    401: "Missing or invalid credentials.",
    403: "Valid credentials without the required scope.",
    404: "No such resource.",
    408: "The request body arrived slower than BODY_READ_TIMEOUT_SECONDS allows.",
    409: "Conflicts with the current state (e.g. model artifacts that fail verification).",
    413: "Request body larger than MAX_BODY_BYTES.",
    415: "Request body is not application/json.",
    422: "A field is missing, of the wrong type or out of range; see `errors`.",
    429: "Rate limit exceeded; see Retry-After and RateLimit headers.",
    500: "Unexpected server error (no details are disclosed).",
    503: "Not ready, overloaded, or the credential store is unreachable; retry after Retry-After.",
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries answering ``application/problem+json`` for each status."""
    return {
        status: {
            "description": _DESCRIPTIONS[status],
            "content": {PROBLEM_JSON: {"schema": _PROBLEM_SCHEMA}},
        }
        for status in statuses
    }
