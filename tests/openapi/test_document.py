"""The OpenAPI document as generated SDKs, linters and people read it: valid OpenAPI 3.1,
one problem schema behind every error, stable operation ids, explicit security."""

from __future__ import annotations

from typing import Any

from openapi_spec_validator import validate

from app.errors import PROBLEM_JSON
from app.openapi import OPERATION_IDS, RESPONSE_NAMES
from tests.support.openapi import resolve

METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
PUBLIC = {"healthz", "readyz", "getJwks"}
OAUTH = {"issueToken", "revokeToken"}


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, item[method])
        for path, item in document["paths"].items()
        for method in METHODS
        if method in item
    ]


def test_the_document_is_valid_openapi(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    validate(document)  # openapi-spec-validator: raises on the first error


def test_every_operation_has_its_id_from_the_table(document: dict[str, Any]) -> None:
    ids = [operation["operationId"] for _, _, operation in operations(document)]
    assert len(ids) == len(set(ids))
    missing = sorted(set(ids) - set(OPERATION_IDS.values()))
    assert missing == [], f"add these routes to app.openapi.OPERATION_IDS: {missing}"
    assert {"predictV1", "predictV1Batch", "predictV2", "getModelV1", "createKey", "listKeys"} <= {
        *ids
    }
    assert {"rotateKey", "revokeKey", "getUsage", "issueToken", "revokeToken"} <= {*ids}
    assert {"reloadModels", "getMetrics", "healthz", "readyz", "getJwks"} <= {*ids}


def test_every_operation_documents_its_4xx_and_declares_security(
    document: dict[str, Any],
) -> None:
    for method, path, operation in operations(document):
        label = f"{method.upper()} {path}"
        statuses = {int(s) for s in operation["responses"] if s.isdigit()}
        assert any(400 <= s < 500 for s in statuses), label
        assert "security" in operation, label
        if operation["operationId"] in PUBLIC:
            assert operation["security"] == [], label
        elif operation["operationId"] in OAUTH:
            # HTTP Basic, or the client's credentials as form fields (or none, password grant).
            assert operation["security"] == [{"clientBasic": []}, {}], label
        else:
            assert operation["security"], label
            assert {"401", "429"} <= operation["responses"].keys(), label
    basic = document["components"]["securitySchemes"]["clientBasic"]
    assert basic == basic | {"type": "http", "scheme": "basic"}


def test_one_problem_schema_behind_every_error(document: dict[str, Any]) -> None:
    """No problem schema is inlined: each error answer refers to a response component,
    and each of those to the one ``Problem`` schema."""
    responses = document["components"]["responses"]
    problem_ref = {"$ref": "#/components/schemas/Problem"}
    for name, declared in responses.items():
        for media, content in declared["content"].items():
            if media == PROBLEM_JSON:
                assert content["schema"] == problem_ref, name
    seen = 0
    for method, path, operation in operations(document):
        for status, answer in operation["responses"].items():
            content = resolve(document, answer).get("content", {})
            if int(status) >= 400 and PROBLEM_JSON in content:
                assert answer == {"$ref": f"#/components/responses/{RESPONSE_NAMES[int(status)]}"}
                seen += 1
            # Every 4xx is a problem but /token's and /revoke's (RFC 6749); /readyz's 503
            # is its readiness report.
            if 400 <= int(status) < 500 and operation["operationId"] not in OAUTH:
                assert PROBLEM_JSON in content, f"{method} {path} {status}"
    assert seen > 50
    problem = document["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail"}
    assert problem["properties"]["errors"]["items"] == {"$ref": "#/components/schemas/FieldError"}


def test_rate_limited_and_unauthorized_carry_their_headers(document: dict[str, Any]) -> None:
    responses = document["components"]["responses"]
    limited = responses["RateLimited"]["headers"]
    assert {"Retry-After", "RateLimit-Policy", "RateLimit"} <= limited.keys()
    assert limited["Retry-After"]["required"] is True
    assert responses["Unauthorized"]["headers"]["WWW-Authenticate"]["required"] is True
    assert "Retry-After" in responses["OAuthRateLimited"]["headers"]
    token = document["paths"]["/token"]["post"]["responses"]
    assert token["429"] == {"$ref": "#/components/responses/OAuthRateLimited"}
    assert token["401"] == {"$ref": "#/components/responses/OAuthError"}


def test_servers_license_and_tags(document: dict[str, Any]) -> None:
    assert document["servers"]
    assert all(s["url"] for s in document["servers"])
    assert document["info"]["license"]["name"] == "MIT"
    used = {tag for _, _, operation in operations(document) for tag in operation["tags"]}
    assert used <= {tag["name"] for tag in document["tags"]}


def test_the_password_grant_shows_only_when_enabled(document: dict[str, Any]) -> None:
    [oauth] = [
        s for s in document["components"]["securitySchemes"].values() if s["type"] == "oauth2"
    ]
    form = document["paths"]["/token"]["post"]["requestBody"]["content"]
    schema = form["application/x-www-form-urlencoded"]["schema"]
    enabled = "password" in oauth["flows"]
    assert ("password" in schema["properties"]["grant_type"]["enum"]) is enabled
    assert ("username" in schema["properties"]) is enabled
    assert "clientCredentials" in oauth["flows"]
