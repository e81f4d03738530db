"""Rate limits shared by real processes through a real Redis, and what a Redis outage does.

Every test here starts ``housing-api serve`` for real (uvicorn, or gunicorn with
uvicorn workers) against a ``redis-server`` of the session (tests/conftest.py), with a
shared VAR_DIR and SQLite database so the processes share the dev signing key, the
pepper and the API keys. The in-process tests are in tests/limits/test_limits.py.
"""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.app_server import (
    AppServer,
    app_env,
    run_cli,
    running_app,
    running_apps,
    spawn_app,
)
from tests.support.houses import V1_HOUSE
from tests.support.redis import RedisServer

pytestmark = pytest.mark.slow

HOUSE = V1_HOUSE
LIMIT = 7
REQUESTS = 12
UNSET_REDIS_WARNING = "REDIS_URL is unset"


@dataclass
class Deployment:
    """What the servers of one test share: environment, files, and a partner's API key."""

    root: Path
    env: dict[str, str]
    api_key: str

    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key, "Connection": "close"}


def serve_env(root: Path, model_dir: Path, **settings: str) -> dict[str, str]:
    """Development settings whose VAR_DIR (dev JWT secret, pepper) and SQLite database
    under ``root`` are shared by every process started with them."""
    return app_env(
        {
            "APP_ENV": "development",
            "VAR_DIR": str(root / "var"),
            "DATABASE_URL": f"sqlite:///{root / 'var' / 'housing.db'}",
            "MODEL_DIR": str(model_dir),
            **settings,
        }
    )


@pytest.fixture
def deployment(
    tmp_path: Path, trained_model_dir: Path, redis_url: str
) -> Callable[..., Deployment]:
    """Settings for ``serve`` on the test's Redis database, and an API key created with
    the CLI against them (the keys' store is the shared SQLite file)."""

    def make(*, limit: str = f"{LIMIT}/minute") -> Deployment:
        env = serve_env(tmp_path, trained_model_dir, REDIS_URL=redis_url, RATE_LIMIT_PREDICT=limit)
        created = run_cli(env, tmp_path, "keys", "create", "--owner", "t", "--scopes", "predict")
        api_key = next(
            line.split()[-1] for line in created.stdout.splitlines() if line.startswith("api_key")
        )
        return Deployment(tmp_path, env, api_key)

    return make


def predict(client: httpx.Client, server: AppServer, deployment: Deployment) -> httpx.Response:
    return client.post(f"{server.base_url}/v1/predict", json=HOUSE, headers=deployment.headers())


def assert_quota_headers(response: httpx.Response, remaining: int | None = None) -> None:
    headers = response.headers
    assert headers["X-RateLimit-Limit"] == str(LIMIT)
    assert int(headers["X-RateLimit-Reset"]) > time.time() - 1
    assert headers["RateLimit-Policy"] == f'"{LIMIT}-per-60s";q={LIMIT};w=60'
    assert headers["RateLimit"].startswith(
        f'"{LIMIT}-per-60s";r={headers["X-RateLimit-Remaining"]};t='
    )
    if remaining is not None:
        assert headers["X-RateLimit-Remaining"] == str(remaining), dict(headers)


def assert_throttled(response: httpx.Response) -> None:
    """A 429 problem with Retry-After and both the X- and the IETF quota fields."""
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == 429
    assert {"type", "title", "status", "detail"} <= body.keys()
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert_quota_headers(response, remaining=0)


def test_two_workers_share_one_limit(deployment: Callable[..., Deployment]) -> None:
    """``serve --workers 2`` on Redis: 12 predictions, each on a new connection, answered
    by both workers (the kernel says which PID held each connection), get exactly 7 x 200.
    Per-worker limits would have let min(7, n1) + min(7, n2) >= 8 through."""
    dep = deployment()
    with running_app(dep.root / "two-workers", dep.env, workers=2) as server:

        def send(_: int) -> tuple[httpx.Response, int]:
            return server.request_from_worker(
                "POST", "/v1/predict", json=HOUSE, headers={"X-API-Key": dep.api_key}
            )

        # A few at a time, so that one worker is busy when the next connection arrives.
        with ThreadPoolExecutor(max_workers=3) as pool:
            answered = list(pool.map(send, range(REQUESTS)))
        stderr = server.stderr
    by_worker: dict[int, Counter[int]] = {}
    for answer, pid in answered:
        by_worker.setdefault(pid, Counter())[answer.status_code] += 1
    statuses = Counter(answer.status_code for answer, _ in answered)
    assert statuses == {200: LIMIT, 429: REQUESTS - LIMIT}, by_worker
    assert len(by_worker) == 2, by_worker  # both workers answered predictions
    print(f"\nstatuses per worker PID: {by_worker}")
    for answer, _ in answered:
        if answer.status_code == 200:
            assert_quota_headers(answer)
        else:
            assert_throttled(answer)
    assert UNSET_REDIS_WARNING not in stderr


def test_two_replicas_share_one_limit(deployment: Callable[..., Deployment]) -> None:
    """Two ``serve`` processes on two ports, one Redis, one database: 12 predictions
    alternating between them get 7 x 200 in total, X-RateLimit-Remaining counting 6..0
    across both, then 429 from both."""
    dep = deployment()
    roots = [dep.root / "replica-a", dep.root / "replica-b"]
    no_keepalive = httpx.Limits(max_keepalive_connections=0)
    with (
        running_apps(roots, dep.env) as replicas,
        httpx.Client(limits=no_keepalive, timeout=15.0) as client,
    ):
        answers = [
            (index % 2, predict(client, replicas[index % 2], dep)) for index in range(REQUESTS)
        ]
    assert [a.status_code for _, a in answers] == [200] * LIMIT + [429] * (REQUESTS - LIMIT)
    for countdown, (_, answer) in zip(range(LIMIT - 1, -1, -1), answers[:LIMIT], strict=True):
        assert_quota_headers(answer, remaining=countdown)
    for _, answer in answers[LIMIT:]:
        assert_throttled(answer)
    assert {replica for replica, _ in answers[LIMIT:]} == {0, 1}


def test_workers_without_redis_warn_that_limits_are_per_worker(
    tmp_path: Path, trained_model_dir: Path
) -> None:
    """Without REDIS_URL, ``serve --workers 2`` says on stderr that each worker counts
    on its own (printed before gunicorn starts: no need to wait for the workers)."""
    server = spawn_app(tmp_path / "no-redis", serve_env(tmp_path, trained_model_dir), workers=2)
    try:
        deadline = time.monotonic() + 60.0
        while UNSET_REDIS_WARNING not in server.stderr:
            assert server.process.poll() is None, server.stderr
            assert time.monotonic() < deadline, server.stderr
            time.sleep(0.05)
    finally:
        server.stop()
    # A JSON log event, like every line of the server's stderr.
    [warning] = [
        event
        for event in map(json.loads, server.stderr.splitlines())
        if UNSET_REDIS_WARNING in event["message"]
    ]
    assert warning["level"] == "warning"
    assert warning["message"].startswith(
        "REDIS_URL is unset, so each of the 2 workers keeps its own in-memory rate "
        "limits (a limit of N allows up to N per worker). Set REDIS_URL."
    )


@dataclass
class Exchange:
    """One request of the outage test and what came back."""

    phase: str  # "up", "down" (Redis stopped) or "restarted"
    path: str
    status: int
    seconds: float  # how long the answer took
    at: float  # when it was sent, since the start of the test
    body: dict[str, Any]
    remaining: int | None  # X-RateLimit-Remaining, on predictions


def test_redis_outage_never_answers_5xx(
    deployment: Callable[..., Deployment], redis_server: RedisServer, redis_url: str
) -> None:
    """The policy when the limiter's Redis fails (app/limits.py): SlowAPI falls back to
    per-process in-memory limits, so predictions keep answering 200 (each process then
    enforces the full limit on its own: at most workers x limit in total); /readyz
    answers 503 with ``checks.limiter == "failing"`` for as long as Redis is down, so a
    load balancer or operator sees it; nothing answers 5xx otherwise. After Redis comes
    back, /readyz is 200 at once and SlowAPI, which re-checks its storage with
    exponential back-off (1, 2, 4, ... s), counts in Redis again within seconds.

    Redis is stopped (SIGTERM) in the middle of a stream of requests and restarted on the
    same port, empty (no persistence), as after a crash.
    """
    high = 999  # X-RateLimit-Remaining after a first hit
    dep = deployment(limit=f"{high + 1}/minute")
    limiter_db = redis_server.client(int(redis_url.rsplit("/", 1)[1]))
    exchanges: list[Exchange] = []
    start = time.monotonic()

    with (
        running_app(dep.root / "outage", dep.env) as server,
        httpx.Client(base_url=server.base_url, timeout=30.0) as client,
        limiter_db,
    ):

        def round_trip(phase: str) -> None:
            """One prediction and one readiness probe."""
            for method, path in (("POST", "/v1/predict"), ("GET", "/readyz")):
                sent = time.monotonic()
                answer = client.request(
                    method,
                    path,
                    json=HOUSE if method == "POST" else None,
                    headers={"X-API-Key": dep.api_key},
                )
                exchanges.append(
                    Exchange(
                        phase,
                        path,
                        answer.status_code,
                        time.monotonic() - sent,
                        sent - start,
                        answer.json(),
                        _int_or_none(answer.headers.get("X-RateLimit-Remaining")),
                    )
                )
            time.sleep(0.1)

        for _ in range(6):
            round_trip("up")
        assert limiter_db.keys("*"), "predictions are not counted in Redis"

        redis_server.stop()
        stopped = time.monotonic()
        for rounds in itertools.count(1):
            round_trip("down")
            if rounds >= 15 and time.monotonic() - stopped > 3.0:
                break

        redis_server.start()
        restarted = time.monotonic()
        ready_again = counted_again = None
        while time.monotonic() - restarted < 20.0:
            round_trip("restarted")
            now = time.monotonic() - restarted
            if ready_again is None and exchanges[-1].status == 200:
                ready_again = now
            if counted_again is None and limiter_db.keys("*"):
                counted_again = now
            if ready_again is not None and counted_again is not None:
                break

    predictions = [e for e in exchanges if e.path == "/v1/predict"]
    probes = [e for e in exchanges if e.path == "/readyz"]
    down = [e for e in probes if e.phase == "down"]
    summary = [(round(e.at, 1), e.phase, e.path, e.status, round(e.seconds, 2)) for e in exchanges]
    assert len(exchanges) >= 40, summary
    assert all(e.status < 500 or (e.path, e.status) == ("/readyz", 503) for e in exchanges)
    assert {e.status for e in predictions} == {200}, summary
    assert all(e.status == 200 for e in probes if e.phase == "up"), summary
    assert down, summary
    for probe in down:
        assert probe.status == 503, summary
        assert probe.body["checks"] == {"models": "ok", "database": "ok", "limiter": "failing"}
    assert ready_again is not None, summary
    assert ready_again < 5.0, summary
    assert counted_again is not None, summary
    # The quota seen by the caller: Redis's count, then this process's in-memory count
    # from zero, then Redis's again (emptied by the restart).
    assert [e.remaining for e in predictions if e.phase == "up"] == list(range(high, 993, -1))
    assert next(e for e in predictions if e.phase == "down").remaining == high, summary
    assert predictions[-1].remaining == high, summary
    print(
        f"\n{len(predictions)} predictions, {len(probes)} probes; slowest answer while Redis "
        f"was down {max(e.seconds for e in exchanges if e.phase == 'down'):.2f}s; "
        f"/readyz 200 {ready_again:.1f}s and counting in Redis {counted_again:.1f}s "
        "after the restart"
    )


def _int_or_none(value: str | None) -> int | None:
    return None if value is None else int(value)
