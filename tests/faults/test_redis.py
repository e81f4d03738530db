"""Redis taken away from a running service: restarted empty, then hung with SIGSTOP.

One ``housing-api serve --workers 2`` (gunicorn) on a Redis of this module's own. Each
worker falls back to in-memory counting while Redis is gone; ``/readyz`` must answer
503 for exactly as long as the worker that answers it is not counting in Redis, and
every worker must count in Redis again, exactly and shared, soon after it is back.
"Counted in Redis" is read from Redis itself: the moving windows are lists, and a hit
that reached Redis adds one entry.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from auth.wiring import open_store
from bench.sigterm import RunResult, terminate_under_load
from migrations import upgrade_schema
from tests.faults.support import Load, deployment_config, percentile, transport_errors
from tests.support.app_server import AppServer, app_env, running_app
from tests.support.houses import V1_HOUSE
from tests.support.redis import RedisServer

pytestmark = pytest.mark.slow

RECOVERY_S = 3.0  # the watcher re-checks every second; a loaded machine may be slow


@dataclass
class Deployment:
    server: AppServer
    redis: RedisServer
    api_key: str
    client_id: str
    client_secret: str
    manager_key: str  # keys:manage, for the SlowAPI-limited /v1/keys

    def token(self) -> tuple[httpx.Response, int]:
        """``POST /token`` on a new connection; the answer and the worker's PID."""
        return self.server.request_from_worker(
            "POST",
            "/token",
            data={"grant_type": "client_credentials"},
            auth=(self.client_id, self.client_secret),
        )

    def readyz(self) -> tuple[httpx.Response, int]:
        return self.server.get_from_worker("/readyz")


def entries_in_redis(conn: redis.Redis) -> int:
    """Every hit stored in Redis: the moving windows are lists, one entry per hit."""
    return sum(int(conn.llen(key)) for key in conn.scan_iter() if conn.type(key) == b"list")


@pytest.fixture(scope="module")
def deployment(
    fault_redis: RedisServer, trained_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("faults-redis")
    values, settings = deployment_config(
        root,
        trained_model_dir,
        REDIS_URL=fault_redis.url(0),
        RATE_LIMIT_TOKEN="1000/minute",
        PREDICTION_LOG_ENABLED="false",
    )
    with open_store(settings, upgrade_schema) as store:
        api_key = store.api_keys.create("faults", "predict")[1]
        manager_key = store.api_keys.create("faults-partner", "keys:manage")[1]
        client_id, secret = store.clients.create("faults-app", "predict")
    with running_app(root / "server", app_env(values), workers=2) as server:
        yield Deployment(server, fault_redis, api_key, client_id, secret, manager_key)


def test_redis_restart_readyz_is_503_until_every_worker_counts_in_redis_again(
    deployment: Deployment,
) -> None:
    conn = deployment.redis.client(0)
    answers: list[tuple[str, int, int, float]] = []  # (what, status, pid, at)
    # Up: every hit is counted once, in Redis, whichever worker takes it.
    for _ in range(4):
        before = entries_in_redis(conn)
        answer, pid = deployment.token()
        assert answer.status_code == 200, answer.text
        assert entries_in_redis(conn) == before + 1
        answers.append(("token", answer.status_code, pid, 0.0))

    deployment.redis.stop()
    down: dict[int, str] = {}
    deadline = time.monotonic() + 30
    while len(down) < 2:  # both workers say so (the kernel picks which one answers)
        assert time.monotonic() < deadline, down
        ready, pid = deployment.readyz()
        assert ready.status_code == 503, ready.text
        down[pid] = ready.json()["checks"]["limiter"]
        token, pid = deployment.token()  # the fallback answers: no 5xx
        assert token.status_code == 200, token.text
    assert set(down.values()) == {"failing"}

    deployment.redis.start()  # empty, as after a crash without persistence
    restarted = time.monotonic()
    probes: list[tuple[int, int, float]] = []  # (pid, /readyz status, since restart)
    hits: list[tuple[int, bool, float]] = []  # (pid, counted in Redis, since restart)
    while True:
        now = time.monotonic() - restarted
        assert now < 30, (probes, hits)
        ready, pid = deployment.readyz()
        assert ready.status_code in (200, 503), ready.text
        probes.append((pid, ready.status_code, now))
        before = entries_in_redis(conn)
        token, pid = deployment.token()
        assert token.status_code == 200, token.text
        hits.append((pid, entries_in_redis(conn) == before + 1, time.monotonic() - restarted))
        late = [p for p in probes if p[2] >= RECOVERY_S]
        if len({pid for pid, _, _ in late}) == 2 and len(late) >= 4:
            break
    ready_at = {}
    for pid, status, at in probes:
        if status == 200:
            ready_at.setdefault(pid, at)
    # /readyz said 200 only for a worker that counted in Redis from then on.
    early = [h for h in hits if h[0] in ready_at and h[2] >= ready_at[h[0]] and not h[1]]
    assert early == [], (ready_at, hits)
    # Within RECOVERY_S of Redis, every worker is ready and counts in Redis.
    assert [p for p in probes if p[2] >= RECOVERY_S and p[1] != 200] == [], probes
    assert [h for h in hits if h[2] >= RECOVERY_S and not h[1]] == [], hits

    # Exact and shared again: consecutive hits, over both workers, count one by one.
    remaining: list[int] = []
    workers: set[int] = set()
    while len(remaining) < 10 or len(workers) < 2:
        assert len(remaining) < 100, workers
        before = entries_in_redis(conn)
        answer, pid = deployment.token()
        assert entries_in_redis(conn) == before + 1
        remaining.append(int(answer.headers["X-RateLimit-Remaining"]))
        workers.add(pid)
    assert remaining == list(range(remaining[0], remaining[0] - len(remaining), -1))
    print(
        f"\nRedis restarted: first /readyz 200 seen from each worker {ready_at} s after; "
        f"{len(hits)} hits meanwhile, {sum(h[1] for h in hits)} counted in Redis (all of a "
        f"worker's after it said ready); then {len(remaining)} hits over both workers "
        "counted exactly"
    )
    conn.close()


def test_redis_hung_with_sigstop(deployment: Deployment) -> None:
    server = deployment.server
    load = Load(server.base_url)
    headers = {"X-API-Key": deployment.api_key}
    for name in ("key-1", "key-2", "key-3"):
        load.caller(name, lambda c, _: c.post("/v1/predict", json=V1_HOUSE, headers=headers))
    load.caller("readyz", lambda c, _: c.get("/readyz"), pause=0.1)
    manager = {"X-API-Key": deployment.manager_key}
    load.caller("keys", lambda c, _: c.get("/v1/keys", headers=manager), pause=0.05)
    try:
        load.sleep(2.0)
        hung = load.now()
        deployment.redis.pause()
        load.sleep(4.0)
        resumed = load.now()
        deployment.redis.resume()
        load.sleep(1.0)
    finally:
        load.stop()
        deployment.redis.resume()
    ready: set[int] = set()
    deadline = time.monotonic() + RECOVERY_S + 5
    while len(ready) < 2:  # every worker counts in Redis again
        assert time.monotonic() < deadline, ready
        answer, pid = deployment.readyz()
        if answer.status_code == 200:
            ready.add(pid)
    summary = load.summary()
    predictions = [e for e in load.exchanges if e.caller.startswith("key")]
    before = [e.seconds for e in predictions if e.at < hung]
    during = [e.seconds for e in predictions if hung <= e.at < resumed]
    print(
        f"\nRedis hung {hung:.1f}s to {resumed:.1f}s: predictions p99 "
        f"{percentile(before, 0.99) * 1000:.0f} ms before, during p50 "
        f"{percentile(during, 0.5) * 1000:.0f} ms, p99 {percentile(during, 0.99) * 1000:.0f} ms,"
        f" max {max(during) * 1000:.0f} ms over {len(during)} answers; {summary}"
    )
    assert transport_errors(load.exchanges) == []
    assert {e.status for e in predictions} == {200}, summary
    # SlowAPI's limit on /v1/keys is checked off the event loop: answered, never a 5xx,
    # and (above) no prediction waited for its Redis timeouts.
    assert {e.status for e in load.of("keys")} == {200}, summary
    # The per-process fallback after one 0.25 s socket timeout: a hang costs a caller
    # at most a few timeouts, never the hang.
    assert max(during) < percentile(before, 0.99) + 1.5
    assert len(during) >= 0.5 * len(before) * (resumed - hung) / hung
    # Every probe answered while Redis was hung (a second after it hung, to let the
    # first requests notice) said the limiter was failing.
    probes = [p for p in load.of("readyz", hung + 1.0) if p.at + p.seconds < resumed]
    assert probes
    assert all(p.status == 503 for p in probes)
    assert {p.body["checks"]["limiter"] for p in probes} == {"failing"}


def test_sigterm_under_load_loses_nothing_under_gunicorn(deployment: Deployment) -> None:
    """Last, as it stops the module's server: SIGTERM to gunicorn's master under load
    from eight keep-alive connections (tests/faults/test_sigterm.py does uvicorn)."""
    server = deployment.server
    result = terminate_under_load(
        RunResult(1),
        server.base_url,
        server.process,
        server.root / "stderr.log",
        deployment.api_key,
        threads=8,
        before=100,
    )
    print(f"\ngunicorn, 2 workers: {result.line()}")
    assert result.passed, result.line()
    assert result.answered[200] >= 100
