"""Rate limits and load shedding in one process: who is counted, how, and what 429 says.

The storage here is SlowAPI's in-memory one; tests/limits/test_shared_limits.py
shows the same limits shared across processes through a real Redis.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.limits.conftest import HOUSE, OUTSIDER, PROXY, http, running
from tests.limits.exchange import Exchange

pytestmark = pytest.mark.anyio
_accounts = itertools.count(1)


def api_key(
    app: FastAPI,
    scopes: str = "predict models:read",
    plan: str = "default",
    account: str | None = None,
) -> str:
    """A key of ``account``; by default of an account of its own: one caller, one budget."""
    owner = account or f"limits-test-{next(_accounts)}"
    return str(app.state.services.store.api_keys.create(owner, scopes, plan)[1])


def assert_quota_headers(response: httpx.Response) -> None:
    for name in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"):
        assert name in response.headers, name
    assert response.headers["RateLimit-Policy"].endswith(";w=60")
    assert ";r=" in response.headers["RateLimit"]
    assert ";t=" in response.headers["RateLimit"]


def assert_throttled(response: httpx.Response, *, oauth: bool = False, remaining: int = 0) -> None:
    assert response.status_code == 429, response.text
    assert int(response.headers["Retry-After"]) >= 1
    assert_quota_headers(response)
    assert response.headers["X-RateLimit-Remaining"] == str(remaining)
    if oauth:
        assert response.json()["error"] == "slow_down"
    else:
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["status"] == 429


async def test_predict_allows_exactly_the_limit_then_429(build_app: Callable[..., FastAPI]) -> None:
    async with running(build_app(rate_limit_predict="5/minute")) as app:
        async with http(app, **{"X-API-Key": api_key(app)}) as client:
            answers = [await client.post("/v1/predict", json=HOUSE) for _ in range(7)]
    assert [a.status_code for a in answers] == [200] * 5 + [429] * 2
    assert [a.headers["X-RateLimit-Remaining"] for a in answers[:5]] == ["4", "3", "2", "1", "0"]
    assert answers[0].headers["RateLimit-Policy"] == '"5-per-60s";q=5;w=60'
    assert answers[0].headers["RateLimit"].startswith('"5-per-60s";r=4;t=')
    assert "Retry-After" not in answers[0].headers
    assert_throttled(answers[5])


@pytest.mark.parametrize("path", ["/v1/predict", "/v2/predict", "/v1/model", "/v2/model"])
async def test_every_limited_route_answers_quota_headers(
    build_app: Callable[..., FastAPI], path: str
) -> None:
    body = HOUSE | dict.fromkeys(["driveway", "recroom", "fullbase", "gashw", "airco"], False)
    body["prefarea"] = True
    async with running(build_app()) as app, http(app, **{"X-API-Key": api_key(app)}) as client:
        if path.endswith("model"):
            response = await client.get(path)
        else:
            response = await client.post(path, json=body if "v2" in path else HOUSE)
    assert response.status_code == 200, response.text
    assert_quota_headers(response)


async def test_v1_and_v2_share_one_budget(build_app: Callable[..., FastAPI]) -> None:
    async with running(build_app(rate_limit_predict="2/minute")) as app:
        async with http(app, **{"X-API-Key": api_key(app)}) as client:
            first = await client.post("/v1/predict", json=HOUSE)
            second = await client.post("/v1/predict/batch", json={"instances": [HOUSE]})
            third = await client.post("/v1/predict", json=HOUSE)
    assert (first.status_code, second.status_code) == (200, 200)
    assert_throttled(third)


async def test_one_callers_usage_never_throttles_another(
    build_app: Callable[..., FastAPI],
) -> None:
    async with running(build_app(rate_limit_predict="3/minute")) as app:
        greedy = http(app, **{"X-API-Key": api_key(app)})
        polite = http(app, **{"X-API-Key": api_key(app)})  # same address, other identity
        async with greedy, polite:
            for _ in range(3):
                assert (await greedy.post("/v1/predict", json=HOUSE)).status_code == 200
            assert_throttled(await greedy.post("/v1/predict", json=HOUSE))
            answer = await polite.post("/v1/predict", json=HOUSE)
    assert answer.status_code == 200
    assert answer.headers["X-RateLimit-Remaining"] == "2"


async def test_bearer_tokens_are_limited_per_client(build_app: Callable[..., FastAPI]) -> None:
    async with running(build_app(rate_limit_predict="2/minute")) as app:
        client_id, secret = app.state.services.store.clients.create(None, "predict")
        async with http(app) as anonymous:
            tokens = []
            for _ in range(2):  # two tokens, one client: one budget
                answer = await anonymous.post(
                    "/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
                )
                assert_quota_headers(answer)
                tokens.append(answer.json()["access_token"])
            for token in tokens:
                headers = {"Authorization": f"Bearer {token}"}
                assert (await anonymous.post("/v1/predict", json=HOUSE, headers=headers)).is_success
            headers = {"Authorization": f"Bearer {tokens[0]}"}
            assert_throttled(await anonymous.post("/v1/predict", json=HOUSE, headers=headers))


async def test_a_batch_costs_more_than_a_single_prediction(
    build_app: Callable[..., FastAPI],
) -> None:
    async with running(build_app(rate_limit_predict="20/minute")) as app:
        async with http(app, **{"X-API-Key": api_key(app)}) as client:
            batch = await client.post("/v1/predict/batch", json={"instances": [HOUSE] * 1000})
            assert batch.status_code == 200, batch.text
            assert batch.headers["X-RateLimit-Remaining"] == str(20 - 11)  # 1 + 1000 // 100
            small = await client.post("/v1/predict/batch", json={"instances": [HOUSE] * 99})
            assert small.headers["X-RateLimit-Remaining"] == str(20 - 11 - 1)
            too_big = await client.post("/v1/predict/batch", json={"instances": [HOUSE] * 900})
    assert_throttled(too_big, remaining=8)  # costs 10, 8 left: refused, nothing spent


async def test_plan_overrides_the_default_limit(build_app: Callable[..., FastAPI]) -> None:
    app = build_app(rate_limit_predict="50/minute", rate_limit_plans={"free": "2/minute"})
    async with running(app):
        async with http(app, **{"X-API-Key": api_key(app, plan="free")}) as free:
            answers = [await free.post("/v1/predict", json=HOUSE) for _ in range(3)]
        async with http(app, **{"X-API-Key": api_key(app)}) as default:
            other = await default.post("/v1/predict", json=HOUSE)
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert other.headers["X-RateLimit-Limit"] == "50"


async def test_failed_token_attempts_count_per_address_then_even_the_right_secret_waits(
    build_app: Callable[..., FastAPI],
) -> None:
    """RATE_LIMIT_TOKEN counts refused attempts per address: past it that address gets
    429 whatever it sends, until the window passes; another address is not concerned."""
    async with running(build_app(rate_limit_token="3/minute")) as app:
        client_id, secret = app.state.services.store.clients.create(None, "predict")
        form = {"grant_type": "client_credentials"}
        async with http(app) as client:
            failures = [
                await client.post("/token", data=form, auth=(f"cl_unknown{i:08d}", "wrong"))
                for i in range(3)
            ]
            throttled = await client.post("/token", data=form, auth=(client_id, secret))
        async with http(app, peer="192.0.2.99") as elsewhere:
            other_address = await elsewhere.post("/token", data=form, auth=(client_id, secret))
    assert [f.status_code for f in failures] == [401, 401, 401]
    assert_throttled(throttled, oauth=True)
    assert "access_token" not in throttled.text
    assert other_address.status_code == 200


async def test_issuance_is_limited_per_client_not_per_address(
    build_app: Callable[..., FastAPI],
) -> None:
    """RATE_LIMIT_TOKEN_ISSUANCE counts tokens per client, from any address: one client
    past it waits, another client behind the same address (a NAT) does not; successes
    never count against the address."""
    app = build_app(rate_limit_token="2/minute", rate_limit_token_issuance="3/minute")
    async with running(app):
        store = app.state.services.store
        first, second = store.clients.create(None, "predict"), store.clients.create(None, "predict")
        form = {"grant_type": "client_credentials"}
        async with http(app) as nat:
            issued = [await nat.post("/token", data=form, auth=first) for _ in range(3)]
            refused = await nat.post("/token", data=form, auth=first)
            neighbour = [await nat.post("/token", data=form, auth=second) for _ in range(3)]
        async with http(app, peer="192.0.2.77") as elsewhere:
            refused_elsewhere = await elsewhere.post("/token", data=form, auth=first)
    assert [a.status_code for a in issued] == [200] * 3
    assert [a.headers["X-RateLimit-Remaining"] for a in issued] == ["2", "1", "0"]
    assert issued[0].headers["RateLimit-Policy"] == '"3-per-60s";q=3;w=60'
    assert_throttled(refused, oauth=True)
    assert [a.status_code for a in neighbour] == [200] * 3
    assert_throttled(refused_elsewhere, oauth=True)


async def test_failures_in_a_clients_name_never_refuse_its_secret_from_elsewhere(
    build_app: Callable[..., FastAPI],
) -> None:
    """A brute force spread over many addresses throttles those addresses, never the
    client: its correct secret from an address that has not failed gets a token."""
    async with running(build_app(rate_limit_token="4/minute")) as app:
        client_id, secret = app.state.services.store.clients.create(None, "predict")
        form = {"grant_type": "client_credentials"}
        for i in range(4):
            async with http(app, peer=f"192.0.2.{i + 1}") as attacker:
                answers = [
                    await attacker.post("/token", data=form, auth=(client_id, f"guess-{i}-{n}"))
                    for n in range(6)
                ]
                # The pair (address, client) is refused at half the limit, before its
                # secret is even checked (a refusal is not a failure of the address).
                assert [a.status_code for a in answers] == [401, 401, 429, 429, 429, 429]
        async with http(app, peer="192.0.2.200") as owner:
            answer = await owner.post("/token", data=form, auth=(client_id, secret))
    assert answer.status_code == 200, answer.text
    assert answer.json()["access_token"]


async def test_a_failing_pair_does_not_throttle_its_neighbours_behind_one_address(
    build_app: Callable[..., FastAPI],
) -> None:
    """Half of RATE_LIMIT_TOKEN per (address, client): a misconfigured client stops
    itself (429s are not failures) before its address's budget is spent, so the other
    clients behind that address keep getting tokens."""
    async with running(build_app(rate_limit_token="4/minute")) as app:
        store = app.state.services.store
        broken, _ = store.clients.create(None, "predict")
        healthy = store.clients.create(None, "predict")
        form = {"grant_type": "client_credentials"}
        async with http(app) as nat:
            retries = [
                await nat.post("/token", data=form, auth=(broken, "stale")) for _ in range(8)
            ]
            neighbour = [await nat.post("/token", data=form, auth=healthy) for _ in range(3)]
    assert [a.status_code for a in retries] == [401, 401] + [429] * 6
    assert_throttled(retries[-1], oauth=True)
    assert [a.status_code for a in neighbour] == [200] * 3


async def test_failed_authentications_count_against_the_address_not_the_key(
    build_app: Callable[..., FastAPI],
) -> None:
    async with running(build_app(rate_limit_auth_failures="3/minute")) as app:
        key = api_key(app)
        key_id = key.split("_")[1]
        forged = f"hpa_{key_id}_{'A' * 43}"  # the real key id, a wrong secret
        async with http(app, **{"X-API-Key": forged}) as attacker:
            failures = [await attacker.post("/v1/predict", json=HOUSE) for _ in range(3)]
            throttled = await attacker.post("/v1/predict", json=HOUSE)
            # The attacker's address stays throttled even with a valid key now.
            with_valid = await attacker.post("/v1/predict", json=HOUSE, headers={"X-API-Key": key})
        async with http(app, peer="192.0.2.50", **{"X-API-Key": key}) as owner:
            owner_answer = await owner.post("/v1/predict", json=HOUSE)
    assert [f.status_code for f in failures] == [401, 401, 401]
    assert_throttled(throttled)
    assert with_valid.status_code == 429
    assert owner_answer.status_code == 200  # the named key was never locked


async def test_forwarded_for_is_ignored_from_an_untrusted_peer(
    build_app: Callable[..., FastAPI],
) -> None:
    """Rotating X-Forwarded-For does not escape the per-address /token limit."""
    async with running(build_app(rate_limit_token="3/minute")) as app:
        answers = []
        async with http(app, peer=OUTSIDER) as client:
            for i in range(5):
                answers.append(
                    await client.post(
                        "/token",
                        data={"grant_type": "client_credentials"},
                        headers={"X-Forwarded-For": f"10.0.0.{i}", "Forwarded": f"for=10.1.0.{i}"},
                    )
                )
    assert [a.status_code for a in answers] == [401, 401, 401, 429, 429]


async def test_forwarded_for_is_trusted_from_the_proxy(build_app: Callable[..., FastAPI]) -> None:
    """Behind Nginx each real client has its own /token budget."""
    async with running(build_app(rate_limit_token="2/minute")) as app:
        async with http(app, peer=PROXY) as nginx:
            answers = [
                await nginx.post(
                    "/token",
                    data={"grant_type": "client_credentials"},
                    headers={"X-Forwarded-For": f"203.0.113.{i // 2}"},
                )
                for i in range(6)
            ]
    assert [a.status_code for a in answers] == [401] * 6


async def slow_body(release: asyncio.Event) -> AsyncIterator[bytes]:
    yield b'{"lotsize": 5850, '
    await release.wait()
    yield json.dumps(HOUSE)[1:].encode()


async def test_overload_sheds_with_503_and_retry_after(build_app: Callable[..., FastAPI]) -> None:
    async with running(build_app(max_inflight_predictions=1)) as app:
        key = api_key(app)
        release = asyncio.Event()
        occupant = Exchange({"X-API-Key": key}, hold=release)
        held = asyncio.create_task(occupant.run(app))
        async with http(app, **{"X-API-Key": key, "Content-Type": "application/json"}) as client:
            await occupant.answering.wait()  # it holds the only place while it answers
            shed = await client.post("/v1/predict", json=HOUSE)
            health = await client.get("/healthz")
            release.set()
            await held
            after = await client.post("/v1/predict", json=HOUSE)
    assert shed.status_code == 503
    assert shed.headers["Retry-After"] == "1"
    assert shed.headers["content-type"].startswith("application/problem+json")
    assert health.status_code == 200  # only model work is bounded
    assert occupant.status == 200, occupant.body
    assert after.status_code == 200


async def test_a_slow_body_is_cut_off_with_408(build_app: Callable[..., FastAPI]) -> None:
    async with running(build_app(body_read_timeout_seconds=0.2)) as app:
        release = asyncio.Event()
        headers = {"X-API-Key": api_key(app), "Content-Type": "application/json"}
        async with http(app, **headers) as client:
            answer = await client.post("/v1/predict", content=slow_body(release))
    assert answer.status_code == 408
    assert answer.headers["content-type"].startswith("application/problem+json")


async def test_readyz_reports_the_limiter_storage(build_app: Callable[..., FastAPI]) -> None:
    async with running(build_app()) as app, http(app) as client:
        ready = await client.get("/readyz")
    assert ready.json()["checks"] == {"models": "ok", "database": "ok", "limiter": "ok"}


def test_bad_limit_settings_refuse_to_start(build_app: Callable[..., Any]) -> None:
    with pytest.raises(ValueError, match="rate limit"):
        build_app(rate_limit_predict="many per minute")
