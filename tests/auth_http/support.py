"""Helpers shared by the identity tests: real requests, real headers, plain assertions."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import anyio
import httpx
from typer.testing import Result

from tests.support.houses import V1_HOUSE

# How long the contract gives every worker to refuse a revoked or disabled credential.
REVOCATION_DEADLINE_SECONDS = 5.0


class NewClient(Protocol):
    """Creates an OAuth client in the app's store; returns ``(client_id, client_secret)``."""

    def __call__(self, scopes: str = "predict", name: str | None = None) -> tuple[str, str]: ...


class Cli(Protocol):
    """Runs ``housing-api`` with the test's database, var dir and models."""

    def __call__(self, *args: str, input: str | None = None) -> Result: ...


def cli_json(result: Result) -> dict[str, Any]:
    """The one JSON object a ``--json`` command prints on stdout."""
    assert result.exit_code == 0, (result.stdout, result.stderr)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    value = json.loads(lines[0])
    assert isinstance(value, dict)
    return value


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def api_key(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def b64url_decode_json(segment: str) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    )
    return decoded


async def request_token(
    client: httpx.AsyncClient, client_id: str, secret: str, scope: str | None = None
) -> httpx.Response:
    """``client_credentials`` with HTTP Basic (``client_secret_basic``)."""
    data = {"grant_type": "client_credentials"}
    if scope is not None:
        data["scope"] = scope
    return await client.post("/token", data=data, auth=(client_id, secret))


async def get_token(
    client: httpx.AsyncClient, client_id: str, secret: str, scope: str | None = None
) -> str:
    response = await request_token(client, client_id, secret, scope)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


async def predict(client: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    return await client.post("/v1/predict", json=V1_HOUSE, headers=headers)


def assert_oauth_error(
    response: httpx.Response, status: int, error: str, *secrets: str
) -> dict[str, Any]:
    """An RFC 6749 §5.2 answer: exactly ``error`` and ``error_description``, no secret."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "error_description"}, body
    assert body["error"] == error, body
    assert isinstance(body["error_description"], str)
    assert body["error_description"]
    assert "no-store" in response.headers.get("cache-control", "")
    for secret in secrets:
        assert secret not in response.text
        assert all(secret not in value for value in response.headers.values())
    return body


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """An RFC 9457 problem answer without a trace."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert {"type", "title", "status", "detail"} <= body.keys()
    assert "Traceback" not in response.text
    return body


def assert_unauthenticated(response: httpx.Response, *, token_sent: bool = True) -> None:
    """401, a ``Bearer`` challenge, and ``error="invalid_token"`` exactly when one was sent."""
    assert_problem(response, 401)
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer"), challenge
    if token_sent:
        assert 'error="invalid_token"' in challenge, challenge
    else:
        assert "error=" not in challenge, challenge


async def seconds_until_refused(
    send: Callable[[], Awaitable[httpx.Response]],
    deadline: float = REVOCATION_DEADLINE_SECONDS,
) -> float:
    """Poll ``send`` until it answers 401; fail if that takes longer than ``deadline``.

    Until then every answer must still be a success (nothing else is acceptable).
    """
    start = time.monotonic()
    while True:
        response = await send()
        elapsed = time.monotonic() - start
        if response.status_code == 401:
            assert_unauthenticated(response)
            return elapsed
        assert response.status_code == 200, response.text
        assert elapsed <= deadline, f"still accepted {elapsed:.1f} s after being revoked"
        await anyio.sleep(0.1)
