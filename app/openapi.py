"""The OpenAPI document as a product: what generated SDKs, linters and people read.

Routes declare what they can answer with :func:`problems`; :func:`install` then
finishes the document FastAPI generates, once, in :func:`finish`:

* one ``Problem`` schema (RFC 9457) behind every problem answer, through one response
  component per status (``Unauthorized`` with ``WWW-Authenticate``, ``RateLimited``
  with ``Retry-After`` and the IETF ``RateLimit-Policy`` / ``RateLimit`` fields, ...),
  so a generated client has one error model instead of one per operation and status;
  ``/token`` and ``/revoke`` answer RFC 6749 §5.2's ``OAuthError`` instead;
* stable, readable operation ids (:data:`OPERATION_IDS`, by route name), set through
  FastAPI's ``generate_unique_id_function``;
* ``security: []`` on public operations, HTTP Basic declared for ``/token`` and
  ``/revoke`` (RFC 6749 §2.3.1; the form fields remain an alternative), and the OAuth2
  password flow and ``grant_type=password`` only when PASSWORD_GRANT_ENABLED;
* ``servers``, the license, tag descriptions, and a 413 on every operation (the body
  guard answers it before routing, whatever the path).

No route is edited for any of this: the routes keep declaring their statuses.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from app.errors import PROBLEM_JSON

if TYPE_CHECKING:
    from fastapi import FastAPI
    from fastapi.routing import APIRoute

# operationId by route name (the endpoint function's name). tests/openapi checks that
# every operation of the document has its id from here.
# (Pairs, not a dict display: bandit reads a "token" key as a hard-coded password.)
OPERATION_IDS: dict[str, str] = dict(
    [
        ("healthz", "healthz"),
        ("readyz", "readyz"),
        ("predict_v1", "predictV1"),
        ("predict_v1_batch", "predictV1Batch"),
        ("predict_v2", "predictV2"),
        ("predict_v2_batch", "predictV2Batch"),
        ("model_v1", "getModelV1"),
        ("model_v2", "getModelV2"),
        ("token", "issueToken"),
        ("revoke", "revokeToken"),
        ("jwks", "getJwks"),
        ("metrics", "getMetrics"),
        ("reload_models", "reloadModels"),
        ("list_keys", "listKeys"),
        ("create_key", "createKey"),
        ("rotate_key", "rotateKey"),
        ("revoke_key", "revokeKey"),
        ("usage", "getUsage"),
    ]
)

FIELD_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "One invalid field of a 422 answer; the submitted value is never echoed.",
    "required": ["field", "location", "message", "type"],
    "properties": {
        "field": {"type": "string", "examples": ["body.lotsize"]},
        "location": {"type": "array", "items": {"type": "string"}},
        "message": {"type": "string"},
        "type": {"type": "string", "examples": ["less_than_equal"]},
    },
}
_PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details: every error answer but /token's and /revoke's.",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "examples": ["urn:housing-api:problem:validation-error"]},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "422 only: each invalid field.",
            "items": {"$ref": "#/components/schemas/FieldError"},
        },
    },
    "additionalProperties": True,
}
OAUTH_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 6749 §5.2 error, as OAuth client libraries parse it.",
    "required": ["error"],
    "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
}

_DESCRIPTIONS: dict[int, str] = {
    400: "Malformed request, e.g. a JSON body that is not UTF-8.",
    401: "Missing or invalid credentials.",
    403: "Valid credentials without the required scope.",
    404: "No such resource.",
    408: "The request body arrived slower than BODY_READ_TIMEOUT_SECONDS allows.",
    409: "Conflicts with the current state (model artifacts that fail verification, an "
    "account already holding MAX_KEYS_PER_ACCOUNT keys).",
    413: "Request body larger than MAX_BODY_BYTES.",
    415: "Request body is not application/json.",
    422: "A field is missing, of the wrong type or out of range; see `errors`.",
    429: "Rate limit exceeded; see Retry-After and RateLimit headers.",
    500: "Unexpected server error (no details are disclosed).",
    503: "Not ready, overloaded, or the credential store is unreachable; retry after Retry-After.",
}
# The response component of each problem status: components/responses/<name>.
RESPONSE_NAMES: dict[int, str] = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    408: "RequestTimeout",
    409: "Conflict",
    413: "ContentTooLarge",
    415: "UnsupportedMediaType",
    422: "ValidationFailed",
    429: "RateLimited",
    500: "ServerError",
    503: "ServiceUnavailable",
}


def _header(description: str, *, required: bool, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "required": required, "schema": schema}


_RETRY_AFTER = _header(
    "Seconds to wait before retrying.", required=True, schema={"type": "integer", "minimum": 0}
)
RATE_LIMIT_HEADERS: dict[str, Any] = {
    "Retry-After": _RETRY_AFTER,
    "RateLimit-Policy": _header(
        'The quota policy (IETF draft-ietf-httpapi-ratelimit-headers), e.g. `"120-per-60s";'
        "q=120;w=60`.",
        required=False,
        schema={"type": "string"},
    ),
    "RateLimit": _header(
        'What is left of it, e.g. `"120-per-60s";r=0;t=42`.',
        required=False,
        schema={"type": "string"},
    ),
}
_CHALLENGE = _header(
    'RFC 6750 challenge: `Bearer realm="housing-api"`, with `error="invalid_token"` when a '
    'credential was sent, `error="insufficient_scope"` and the needed `scope` on 403.',
    required=True,
    schema={"type": "string"},
)
_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": _CHALLENGE},
    403: {"WWW-Authenticate": {**_CHALLENGE, "required": False}},
    429: RATE_LIMIT_HEADERS,
    503: {"Retry-After": {**_RETRY_AFTER, "required": False}},
}

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_OAUTH_ERROR_REF = {"$ref": "#/components/schemas/OAuthError"}

CLIENT_BASIC = "clientBasic"
_CLIENT_BASIC_SCHEME: dict[str, Any] = {
    "type": "http",
    "scheme": "basic",
    "description": "RFC 6749 §2.3.1: the client id and secret, each form-urlencoded, as HTTP "
    "Basic credentials (client_secret_basic). Sending both as form fields instead "
    "(client_secret_post) works too; the password grant needs no client authentication.",
}
# Operations whose client authentication is HTTP Basic or form fields (or none, for the
# password grant): the empty requirement says the scheme is one way among others.
_BASIC_OPERATIONS = {"issueToken", "revokeToken"}

SERVERS = [{"url": "/", "description": "This server: the origin that serves this document."}]
LICENSE = {"name": "MIT", "identifier": "MIT"}
TAGS = [
    {"name": "predict", "description": "House prices from the v1 and v2 models."},
    {"name": "models", "description": "What answers: features, metrics, artifact hashes."},
    {"name": "keys", "description": "Partners' self-service: their API keys and usage."},
    {"name": "oauth", "description": "Tokens (RFC 6749, RFC 7009) and public keys (RFC 7517)."},
    {"name": "operations", "description": "Metrics and model reloads, for operators."},
    {"name": "health", "description": "Liveness and readiness probes."},
]
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries answering ``application/problem+json`` for each status.

    :func:`finish` replaces each with a reference to the status's response component.
    """
    return {
        status: {
            "description": _DESCRIPTIONS[status],
            "content": {PROBLEM_JSON: {"schema": _PROBLEM_SCHEMA}},
        }
        for status in statuses
    }


def operation_id(route: APIRoute) -> str:
    """FastAPI's ``generate_unique_id_function``: the table's id, else the camel-cased
    route name (which the test of the table then reports)."""
    return OPERATION_IDS.get(route.name) or re.sub(
        r"_([a-z0-9])", lambda m: m.group(1).upper(), route.name
    )


def install(app: FastAPI, *, password_grant_enabled: bool) -> None:
    """Make ``app.openapi()`` answer the finished document (built once, then cached)."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = finish(generate(), password_grant_enabled=password_grant_enabled)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override


def finish(generated: dict[str, Any], *, password_grant_enabled: bool) -> dict[str, Any]:
    """The document FastAPI generated, finished as described above (a deep copy: the
    routes' ``openapi_extra`` dictionaries are shared by every app)."""
    document = copy.deepcopy(generated)
    document["servers"] = SERVERS
    document.setdefault("info", {})["license"] = LICENSE
    document["tags"] = TAGS
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.update(
        Problem=_PROBLEM_SCHEMA, FieldError=FIELD_ERROR_SCHEMA, OAuthError=OAUTH_ERROR_SCHEMA
    )
    components["responses"] = _response_components()
    schemes = components.setdefault("securitySchemes", {})
    schemes[CLIENT_BASIC] = _CLIENT_BASIC_SCHEME
    if not password_grant_enabled:
        _hide_password_grant(document)
    for operation in _operations(document):
        _finish_operation(operation, schemas)
    _drop_unused_components(document)
    return document


def _response_components() -> dict[str, Any]:
    components: dict[str, Any] = {}
    for status, name in RESPONSE_NAMES.items():
        response: dict[str, Any] = {
            "description": _DESCRIPTIONS[status],
            "content": {PROBLEM_JSON: {"schema": _PROBLEM_REF}},
        }
        if status in _HEADERS:
            response["headers"] = _HEADERS[status]
        components[name] = response
    components["OAuthError"] = {
        "description": "RFC 6749 §5.2 error.",
        "content": {"application/json": {"schema": _OAUTH_ERROR_REF}},
    }
    components["OAuthRateLimited"] = {
        "description": "Too many attempts from this address: RFC 6749 §5.2 `slow_down`.",
        "headers": RATE_LIMIT_HEADERS,
        "content": {"application/json": {"schema": _OAUTH_ERROR_REF}},
    }
    return components


def _operations(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        item[method]
        for item in document.get("paths", {}).values()
        for method in _METHODS
        if method in item
    ]


def _finish_operation(operation: dict[str, Any], schemas: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    oauth = operation.get("operationId") in _BASIC_OPERATIONS
    for status, response in list(responses.items()):
        code = int(status) if status.isdigit() else 0
        content = response.get("content", {})
        if PROBLEM_JSON in content and code in RESPONSE_NAMES:
            responses[status] = {"$ref": f"#/components/responses/{RESPONSE_NAMES[code]}"}
        elif oauth and code >= 400 and "application/json" in content:
            name = "OAuthRateLimited" if code == 429 else "OAuthError"
            responses[status] = {"$ref": f"#/components/responses/{name}"}
    # The body guard answers 413 for any path before routing.
    responses.setdefault("413", {"$ref": "#/components/responses/ContentTooLarge"})
    operation["responses"] = dict(sorted(responses.items()))
    if oauth:
        operation["security"] = [{CLIENT_BASIC: []}, {}]
        _name_token_answer(operation, schemas)
    else:
        operation.setdefault("security", [])  # public: no credential needed


def _name_token_answer(operation: dict[str, Any], schemas: dict[str, Any]) -> None:
    """/token's 200 as a named schema (``AccessToken``), not an inline object."""
    ok = operation["responses"].get("200", {}).get("content", {}).get("application/json")
    if ok and ok.get("schema", {}).get("type") == "object":
        schemas["AccessToken"] = ok["schema"]
        ok["schema"] = {"$ref": "#/components/schemas/AccessToken"}


def _hide_password_grant(document: dict[str, Any]) -> None:
    """PASSWORD_GRANT_ENABLED=false: no password flow, no ``grant_type=password``."""
    for scheme in document.get("components", {}).get("securitySchemes", {}).values():
        if scheme.get("type") == "oauth2":
            scheme.get("flows", {}).pop("password", None)
            scheme["description"] = "Bearer access token from POST /token (client credentials)."
    token = document.get("paths", {}).get("/token", {}).get("post", {})
    form = token.get("requestBody", {}).get("content", {})
    for media in form.values():
        properties = media.get("schema", {}).get("properties", {})
        grant = properties.get("grant_type", {})
        if "enum" in grant:
            grant["enum"] = [g for g in grant["enum"] if g != "password"]
        properties.pop("username", None)
        properties.pop("password", None)


def _drop_unused_components(document: dict[str, Any]) -> None:
    """Response components no operation answers, and FastAPI's own validation-error
    schemas (unused once 422 is a problem)."""
    components = document["components"]
    used = repr(document["paths"])
    responses = components["responses"]
    for name in list(responses):
        if f"#/components/responses/{name}" not in used:
            del responses[name]
    schemas = components["schemas"]
    for name in ("HTTPValidationError", "ValidationError"):
        if name in schemas and f"#/components/schemas/{name}" not in repr(document):
            del schemas[name]
