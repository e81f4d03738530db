"""Reading the service's OpenAPI document in tests: follow local ``$ref``s."""

from __future__ import annotations

from typing import Any


def resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """``node``, or what its local ``$ref`` (``#/components/...``) points to, followed."""
    while "$ref" in node:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def response(document: dict[str, Any], path: str, method: str, status: str) -> dict[str, Any]:
    """The response object of one operation and status, references followed."""
    return resolve(document, document["paths"][path][method]["responses"][status])
