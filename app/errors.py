"""Every error answer, in one place: RFC 9457 problem details.

Domain errors carry their status; this module turns them, Starlette's HTTP errors
and validation failures into ``application/problem+json``. A 500 is opaque to the
client and logged with its traceback on the server.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from auth.errors import StoreUnavailable

logger = logging.getLogger("app.errors")

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "urn:housing-api:problem:"

STATUS_TITLES: dict[int, str] = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


class ApiError(Exception):
    """An expected failure with the status and words the client should see."""

    status: int = 400
    slug: str = "bad-request"
    title: str = "Bad Request"

    def __init__(self, detail: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = dict(headers or {})


class NotFound(ApiError):
    status, slug, title = 404, "not-found", "Not Found"


class UnsupportedMediaType(ApiError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported Media Type"


class TooManyRequests(ApiError):
    status, slug, title = 429, "rate-limited", "Too Many Requests"


class ServiceUnavailable(ApiError):
    status, slug, title = 503, "service-unavailable", "Service Unavailable"


def problem_response(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    slug: str | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + slug if slug else "about:blank",
        "title": title or STATUS_TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if extra:
        body.update(extra)
    return JSONResponse(
        body, status_code=status, headers=dict(headers or {}), media_type=PROBLEM_JSON
    )


def field_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Name each offending field without echoing the submitted value back."""
    out = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        out.append(
            {
                "field": ".".join(loc),
                "location": loc,
                "message": str(error.get("msg", "invalid value")),
                "type": str(error.get("type", "value_error")),
            }
        )
    return out


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    error = cast(ApiError, exc)
    return problem_response(
        error.status, error.detail, title=error.title, slug=error.slug, headers=error.headers
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    error = cast(StarletteHTTPException, exc)
    status = error.status_code
    if isinstance(error.__cause__, ApiError):
        # FastAPI wraps whatever reading the body raises (app.json_body's refusal of a
        # body that is not UTF-8) in its own 400: answer the original, as it says.
        return await _api_error(request, error.__cause__)
    detail = error.detail if isinstance(error.detail, str) else STATUS_TITLES.get(status, "")
    headers = dict(error.headers or {})
    if status == 405:
        allowed = _allowed_methods(request)
        if allowed:
            headers["Allow"] = allowed
    return problem_response(status, detail, headers=headers)


def _allowed_methods(request: Request) -> str | None:
    """Every method the OpenAPI document lists for this path. Starlette's 405 names
    only the first route that matched the path, but GET and POST /v1/keys are two."""
    segments = request.scope["path"].split("/")
    methods = {
        method.upper()
        for template, operations in request.app.openapi().get("paths", {}).items()
        if _same_path(template.split("/"), segments)
        for method in operations
        if method in _METHODS
    }
    return ", ".join(sorted(methods)) or None


def _same_path(template: list[str], segments: list[str]) -> bool:
    return len(template) == len(segments) and all(
        part == segment or (part.startswith("{") and part.endswith("}") and segment != "")
        for part, segment in zip(template, segments, strict=True)
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    errors = field_errors(cast(RequestValidationError, exc).errors())
    return problem_response(
        422,
        f"The request has {len(errors)} invalid field(s); see 'errors'.",
        slug="validation-error",
        title="Request validation failed",
        extra={"errors": errors},
    )


STORE_UNAVAILABLE = "The credential store is unavailable; retry after the delay in Retry-After."


def store_unavailable_response(error: StoreUnavailable) -> JSONResponse:
    """503 with ``Retry-After`` while the credential store cannot be reached: the request
    needed it (a credential not verified recently, a key to list) and may be retried."""
    return problem_response(
        503,
        STORE_UNAVAILABLE,
        slug="store-unavailable",
        headers={"Retry-After": str(error.retry_after)},
    )


async def _store_unavailable(request: Request, exc: Exception) -> JSONResponse:
    return store_unavailable_response(cast(StoreUnavailable, exc))


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(500, "The server could not answer this request.")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    # Answered here, not as a 500: no traceback, and the connection stays open.
    app.add_exception_handler(StoreUnavailable, _store_unavailable)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)
