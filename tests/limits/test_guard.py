"""The guard layer decides before a byte of the body is read, and bodies cannot hold it.

These tests call the app as an ASGI server would, with a ``receive`` that records
whether the body was asked for: a refusal that reads nothing is one that an attacker
cannot make expensive by sending (or dripping) a body.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from fastapi import FastAPI

from app.deps import PREDICTOR_SECURITY
from app.main import _every_guard_only_route_is_guarded
from tests.limits.conftest import running
from tests.limits.exchange import Exchange
from tests.support.redis import RedisServer

pytestmark = pytest.mark.anyio


def key(
    app: FastAPI, scopes: str = "predict", plan: str = "default", account: str = "guard-test"
) -> str:
    return str(app.state.services.store.api_keys.create(account, scopes, plan)[1])


async def test_an_accepted_request_reads_its_body(build_app: Callable[..., FastAPI]) -> None:
    async with running(build_app()) as app:
        done = await Exchange({"X-API-Key": key(app)}).run(app)
    assert done.status == 200, done.body
    assert done.body_reads == 1
    assert done.response_headers["ratelimit-policy"] == '"1000-per-60s";q=1000;w=60'


async def test_refusals_happen_before_the_body_is_read(
    build_app: Callable[..., FastAPI],
) -> None:
    app = build_app(rate_limit_predict="1/minute", max_body_bytes=2048)
    async with running(app):
        spent = key(app)
        assert (await Exchange({"X-API-Key": spent}).run(app)).status == 200
        refusals = {
            "no credentials": await Exchange({}).run(app),
            "garbage token": await Exchange({"Authorization": "Bearer garbage"}).run(app),
            "wrong scope": await Exchange({"X-API-Key": key(app, "models:read")}).run(app),
            "over quota": await Exchange({"X-API-Key": spent}).run(app),
            "declared oversize": await Exchange(
                {"X-API-Key": key(app), "Content-Length": "4096"}
            ).run(app),
            "not JSON": await Exchange(
                {"X-API-Key": key(app, account="guard-json"), "Content-Type": "text/plain"}
            ).run(app),
        }
    statuses = {name: exchange.status for name, exchange in refusals.items()}
    assert statuses == {
        "no credentials": 401,
        "garbage token": 401,
        "wrong scope": 403,
        "over quota": 429,
        "declared oversize": 413,
        "not JSON": 415,
    }
    assert {name: exchange.body_reads for name, exchange in refusals.items()} == dict.fromkeys(
        refusals, 0
    )
    assert refusals["no credentials"].response_headers["www-authenticate"].startswith("Bearer")
    assert 'error="invalid_token"' in refusals["garbage token"].response_headers["www-authenticate"]
    over = refusals["over quota"]
    assert int(over.response_headers["retry-after"]) >= 1
    assert over.response_headers["ratelimit"].startswith('"1-per-60s";r=0;t=')
    for exchange in refusals.values():
        exchange.problem()


async def test_anonymous_and_refused_requests_never_take_a_place(
    build_app: Callable[..., FastAPI],
) -> None:
    """With room for one prediction in flight, hundreds of refused requests around a
    caller whose body is still arriving do not take that room from it."""
    app = build_app(max_inflight_predictions=1, body_read_timeout_seconds=5)
    async with running(app):
        partner = key(app)
        slow = Exchange({"X-API-Key": partner}, chunks=4, gap=0.2)
        slow_run = asyncio.ensure_future(slow.run(app))
        await asyncio.sleep(0.05)  # admitted, its body still arriving
        anonymous = await asyncio.gather(*(Exchange({}).run(app) for _ in range(300)))
        await slow_run
        after = await Exchange({"X-API-Key": partner}).run(app)
    assert {exchange.status for exchange in anonymous} == {401}
    assert slow.status == 200, slow.body
    assert after.status == 200


async def test_the_whole_body_has_one_deadline(build_app: Callable[..., FastAPI]) -> None:
    """A body dripped one chunk at a time is stopped when the whole-body deadline
    passes, although no single chunk is late."""
    app = build_app(body_read_timeout_seconds=0.5)
    async with running(app):
        started = time.monotonic()
        drip = await Exchange({"X-API-Key": key(app)}, chunks=40, gap=0.1).run(app)
        elapsed = time.monotonic() - started
    assert drip.status == 408, drip.body
    assert drip.problem()["status"] == 408
    assert 0.4 < elapsed < 2.0
    assert drip.body_reads < 40


async def test_bodies_still_arriving_are_capped_and_whole_bodies_never_wait(
    build_app: Callable[..., FastAPI],
) -> None:
    """MAX_CONCURRENT_BODY_READS caps bodies that are still arriving after their first
    chunk; a body that arrives at once (nearly every caller's) needs no place."""
    app = build_app(max_concurrent_body_reads=1, body_read_timeout_seconds=5)
    async with running(app):
        partner = key(app)
        slow = Exchange({"X-API-Key": partner}, chunks=3, gap=0.3)
        slow_run = asyncio.ensure_future(slow.run(app))
        await asyncio.sleep(0.1)
        second_slow = await Exchange({"X-API-Key": partner}, chunks=3, gap=0.3).run(app)
        whole = await Exchange({"X-API-Key": partner}).run(app)
        await slow_run
        third = await Exchange({"X-API-Key": partner}, chunks=3, gap=0.05).run(app)
    assert second_slow.status == 503
    assert second_slow.response_headers["retry-after"] == "1"
    assert second_slow.body_reads == 1  # refused at its first partial chunk
    assert whole.status == 200, whole.body
    assert (slow.status, third.status) == (200, 200)


async def test_a_paying_caller_dripping_bodies_never_takes_the_models_places(
    build_app: Callable[..., FastAPI],
) -> None:
    """An authenticated caller with quota to spend opens more slow bodies than there
    are places for predictions in flight: none of them holds a place while its body
    arrives, so another caller's predictions are answered meanwhile."""
    app = build_app(
        max_inflight_predictions=2, max_concurrent_body_reads=8, body_read_timeout_seconds=1
    )
    async with running(app):
        abuser, partner = key(app), key(app)
        drips = [Exchange({"X-API-Key": abuser}, chunks=40, gap=0.1) for _ in range(6)]
        dripping = [asyncio.ensure_future(drip.run(app)) for drip in drips]
        await asyncio.sleep(0.2)  # every drip admitted, its body arriving
        served = [await Exchange({"X-API-Key": partner}).run(app) for _ in range(20)]
        await asyncio.gather(*dripping)
    assert [exchange.status for exchange in served] == [200] * 20
    assert {drip.status for drip in drips} == {408}


async def test_a_chunked_body_over_the_limit_is_stopped(
    build_app: Callable[..., FastAPI],
) -> None:
    app = build_app(max_body_bytes=1024)
    async with running(app):
        exchange = Exchange({"X-API-Key": key(app)}, body=b" " * 4096, chunks=8)
        del exchange.headers["content-length"]
        await exchange.run(app)
    assert exchange.status == 413
    assert exchange.body_reads <= 3  # stopped at the first chunk past the limit


async def test_the_redis_quota_is_one_script_call_per_request_and_shared(
    build_app: Callable[..., FastAPI], redis_server: RedisServer, redis_url: str
) -> None:
    """Two apps (two workers) on one Redis count one budget exactly; each guarded
    request is one EVALSHA on one slot (MONITOR sees no SCRIPT EXISTS, no second read),
    and a script flush costs one EVAL more, nothing else."""
    first = build_app(redis_url=redis_url, rate_limit_predict="6/minute")
    second = build_app(redis_url=redis_url, rate_limit_predict="6/minute")
    async with running(first), running(second):
        partner = key(first)
        assert (await Exchange({"X-API-Key": partner}).run(first)).status == 200  # loads
        with redis_server.monitor() as commands:
            answers = [
                await Exchange({"X-API-Key": partner}).run(app)
                for app in (second, first, second, first)
            ]
            seen = commands()
        with redis_server.client(0) as conn:
            conn.script_flush()
        flushed = await Exchange({"X-API-Key": partner}).run(second)
        refused = await Exchange({"X-API-Key": partner}).run(first)
    assert [a.status for a in answers] == [200] * 4
    assert [a.response_headers["x-ratelimit-remaining"] for a in answers] == ["4", "3", "2", "1"]
    # The failure throttle reads an address's window at most once a second per worker
    # (tests/limits/test_failure_throttle.py); everything else is the quota's one call.
    quota = [c for c in seen if "hq:{" in c]
    assert [c.split()[0].upper() for c in quota] == ["EVALSHA"] * 4, seen
    assert all(" 2 hq:{predict:" in c for c in quota)  # two keys, one hash tag
    assert not [c for c in seen if c.upper().startswith("SCRIPT")]
    assert flushed.status == 200
    assert flushed.response_headers["x-ratelimit-remaining"] == "0"
    assert refused.status == 429


def test_a_route_declaring_security_for_openapi_only_must_be_behind_the_guard() -> None:
    """The prediction routes solve no security dependency (the guard decided); an app
    with such a route that the guard does not cover refuses to be built."""
    app = FastAPI()

    @app.post("/v3/predict", openapi_extra=PREDICTOR_SECURITY)
    async def unguarded() -> None:
        return None

    with pytest.raises(RuntimeError, match="/v3/predict"):
        _every_guard_only_route_is_guarded(app)
