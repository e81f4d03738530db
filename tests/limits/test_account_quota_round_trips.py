"""The account quota costs no more than the per-key quota did: one Redis round trip (one
EVALSHA of the quota script) per prediction, whichever credential of the account
presents itself, and a credential capped by a plan of its own below its account's
costs the same (its own counter is in the same script call, on the same hash slot).

In process against a real Redis; the app's other Redis reads (the failure throttle's
once-a-second look at the caller's address) are held still, they are not under test.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis as redis_client
from fastapi import FastAPI

from app.limits import FailureThrottle
from tests.limits.conftest import HOUSE, http, running

pytestmark = pytest.mark.anyio

REQUESTS = 10


def evalsha_calls(connection: redis_client.Redis) -> int:
    stats = connection.info("commandstats")
    calls: int = stats.get("cmdstat_evalsha", {}).get("calls", 0)
    assert not [name for name in stats if name.startswith(("cmdstat_script", "cmdstat_eval|"))]
    return calls


async def test_an_accounts_key_and_token_each_cost_one_round_trip(
    build_app: Callable[..., FastAPI], redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(FailureThrottle, "CLEAR_SECONDS", 3600.0)
    app = build_app(
        redis_url=redis_url, rate_limit_plans={"partner": "10000/minute", "free": "5000/minute"}
    )
    async with running(app):
        store = app.state.services.store
        store.accounts.create("Acme", "partner")
        _, api_key = store.api_keys.create("Acme", "predict")
        _, capped = store.api_keys.create("Acme", "predict", "free")
        client = store.clients.create("acme-app", "predict", account="Acme")
        connection = redis_client.Redis.from_url(redis_url)
        async with http(app) as caller:
            token = (
                await caller.post("/token", data={"grant_type": "client_credentials"}, auth=client)
            ).json()["access_token"]
            credentials = {
                "key": {"X-API-Key": api_key},
                "token": {"Authorization": f"Bearer {token}"},
                "capped key": {"X-API-Key": capped},
            }
            costs = {}
            for name, headers in credentials.items():
                for _ in range(2):  # warm: scripts loaded, caches filled, address read
                    assert (
                        await caller.post("/v1/predict", json=HOUSE, headers=headers)
                    ).is_success
                connection.config_resetstat()
                answers = [
                    await caller.post("/v1/predict", json=HOUSE, headers=headers)
                    for _ in range(REQUESTS)
                ]
                costs[name] = evalsha_calls(connection) / REQUESTS
                assert [a.status_code for a in answers] == [200] * REQUESTS
                assert {a.headers["X-RateLimit-Limit"] for a in answers} == {"10000"}
        connection.close()
    # One script call, the cap included (the per-key quota cost two pipelined scripts).
    assert costs == {"key": 1, "token": 1, "capped key": 1}
