"""What callers get over HTTP while the credential store cannot be reached.

The app runs in process on a real PostgreSQL behind a TCP proxy (tests/support/
tcp_proxy.py) that refuses connections on demand. Verified credentials keep working
within STORE_OUTAGE_GRACE_SECONDS; everything that needs the store gets 503 with
Retry-After (a problem, or RFC 6749 ``temporarily_unavailable`` on /token and
/revoke), never a 500; /readyz says so; all of it comes back without a restart.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from app.main import create_app
from app.settings import Settings
from tests.auth_http.conftest import open_client
from tests.auth_http.support import api_key, bearer, get_token
from tests.support.houses import V1_HOUSE
from tests.support.postgres import PostgresServer
from tests.support.tcp_proxy import TcpProxy, tcp_proxy

pytestmark = [pytest.mark.postgres, pytest.mark.anyio]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def algorithm() -> str:
    return "HS256"


@pytest.fixture
def proxy(postgres_server: PostgresServer) -> Iterator[TcpProxy]:
    with tcp_proxy(postgres_server.port) as proxy:
        yield proxy


@pytest.fixture
def build(
    make_settings: Callable[..., Settings], postgres_url: str, proxy: TcpProxy
) -> Callable[..., FastAPI]:
    url = make_url(postgres_url).set(port=proxy.port).render_as_string(hide_password=False)

    def make(**overrides: Any) -> FastAPI:
        values = {
            "database_url": url,
            "prediction_log_enabled": False,
            "drift_refresh_seconds": 0,
            **overrides,
        }
        return create_app(make_settings("HS256", **values))

    return make


@pytest.fixture
def running(build: Callable[..., FastAPI]) -> Callable[..., Any]:
    """``async with running(**settings) as (app, client, clock)``: the verifier's clock
    is the test's, so caches go stale when the test says."""

    @asynccontextmanager
    async def run(**overrides: Any) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient, Clock]]:
        app = build(**overrides)
        async for client in open_client(app):
            clock = Clock()
            app.state.services.verifier.clock = clock
            yield app, client, clock

    return run


def assert_store_unavailable(answer: httpx.Response) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["type"].endswith("store-unavailable")
    assert int(answer.headers["Retry-After"]) >= 1


def assert_temporarily_unavailable(answer: httpx.Response) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"] == "temporarily_unavailable"
    assert int(answer.headers["Retry-After"]) >= 1
    assert answer.headers["Cache-Control"] == "no-store"


async def wait_ready(client: httpx.AsyncClient) -> httpx.Response:
    """/readyz until 200 (the watcher probes the store once a second), at most 10 s."""
    with anyio.fail_after(10.0):
        for _ in range(1000):
            answer = await client.get("/readyz")
            if answer.status_code == 200:
                return answer
            await anyio.sleep(0.1)
    raise AssertionError("/readyz never answered 200")


async def test_an_outage_answers_503_and_the_grace_keeps_verified_callers(
    running: Callable[..., Any], proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with running(store_outage_grace_seconds=60) as (app, client, clock):
        store = app.state.services.store
        client_id, secret = store.clients.create("app", {"predict", "keys:manage"})
        manager_id, manager_secret = store.clients.create("manager", {"keys:manage"})
        _, key = store.api_keys.create("partner", {"predict"})
        _, unseen_key = store.api_keys.create("stranger", {"predict"})
        token = await get_token(client, client_id, secret)
        manager = await get_token(client, manager_id, manager_secret)
        for headers in (bearer(token), api_key(key)):
            assert (await client.post("/v1/predict", json=V1_HOUSE, headers=headers)).is_success
        assert (await client.get("/v1/keys", headers=bearer(manager))).status_code == 200

        proxy.refuse()
        clock.now += 2.0  # the verifier's caches are stale: it would read the store
        answers = [
            await client.post("/v1/predict", json=V1_HOUSE, headers=headers)
            for headers in (bearer(token), api_key(key)) * 5
        ]
        assert [a.status_code for a in answers] == [200] * 10  # the grace
        assert_store_unavailable(
            await client.post("/v1/predict", json=V1_HOUSE, headers=api_key(unseen_key))
        )
        assert_store_unavailable(await client.get("/v1/keys", headers=bearer(manager)))
        assert_temporarily_unavailable(
            await client.post(
                "/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
            )
        )
        assert_temporarily_unavailable(
            await client.post("/revoke", data={"token": token}, auth=(client_id, secret))
        )
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"] == "failing"

        proxy.restore()
        assert (await wait_ready(client)).json()["checks"]["database"] == "ok"
        assert (
            await client.post("/v1/predict", json=V1_HOUSE, headers=api_key(unseen_key))
        ).is_success
        assert await get_token(client, client_id, secret)

    events = [r for r in caplog.records if r.name == "auth.store.health"]
    assert [e.getMessage() for e in events] == [
        "credential store unreachable",
        "credential store reachable again",
    ]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info]


async def test_a_grace_of_zero_fails_closed_over_http(
    running: Callable[..., Any], proxy: TcpProxy
) -> None:
    async with running(store_outage_grace_seconds=0) as (app, client, clock):
        store = app.state.services.store
        client_id, secret = store.clients.create("app", {"predict"})
        token = await get_token(client, client_id, secret)
        assert (await client.post("/v1/predict", json=V1_HOUSE, headers=bearer(token))).is_success
        proxy.refuse()
        clock.now += 2.0
        for _ in range(3):
            assert_store_unavailable(
                await client.post("/v1/predict", json=V1_HOUSE, headers=bearer(token))
            )
        proxy.restore()
        await wait_ready(client)
        assert (await client.post("/v1/predict", json=V1_HOUSE, headers=bearer(token))).is_success
