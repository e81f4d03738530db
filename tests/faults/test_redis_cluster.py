"""Shared limits on a real Redis Cluster (3 primaries started by the test, slots
assigned by ``redis-cli --cluster create``), ``REDIS_URL=redis+cluster://...``.

Two ``serve`` processes share a cluster of three primaries, each with a replica. Both
the guard's prediction quota (one script call a request, on one slot) and SlowAPI's
issuance limit on ``/token`` must count exactly across both processes. Whatever the
limiter manages, ``/readyz`` must say it: "limiter ok" only when hits reach the
cluster, never while a process counts in its own memory (checked with ``/revoke``,
whose limit is counted apart from ``/token``'s). A primary killed under load costs no
5xx: the replica takes over and counting resumes in the cluster.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest

from auth.wiring import open_store
from migrations import upgrade_schema
from tests.faults.support import Load, deployment_config
from tests.support.app_server import AppServer, app_env, running_apps
from tests.support.houses import V1_HOUSE
from tests.support.redis_cluster import RedisClusterServers, running_redis_cluster

pytestmark = pytest.mark.slow

LIMIT = 5
REQUESTS = 12
PREDICT_LIMIT = 8
PREDICTS = 14
KEYS: dict[str, str] = {}  # account -> an API key of it, made by the fixture


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterServers]:
    with running_redis_cluster(primaries=3, replicas=1) as servers:
        yield servers


@pytest.fixture(scope="module")
def replicas(
    cluster: RedisClusterServers,
    trained_model_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[list[AppServer], tuple[str, str]]]:
    root = tmp_path_factory.mktemp("faults-cluster")
    values, settings = deployment_config(
        root,
        trained_model_dir,
        REDIS_URL=cluster.url(),
        RATE_LIMIT_TOKEN_ISSUANCE=f"{LIMIT}/minute",
        RATE_LIMIT_PREDICT=f"{PREDICT_LIMIT}/minute",
        RATE_LIMIT_PLANS='{"failover": "100000/minute"}',
        PREDICTION_LOG_ENABLED="false",
    )
    with open_store(settings, upgrade_schema) as store:
        credentials = store.clients.create("cluster-app", "predict")
        for account, plan in (("cluster-quota", "default"), ("cluster-failover", "failover")):
            store.accounts.create(account, plan)
            KEYS[account] = store.api_keys.create(account, "predict")[1]
    with running_apps([root / "a", root / "b"], app_env(values)) as servers:
        yield servers, credentials


def token(client: httpx.Client, server: AppServer, credentials: tuple[str, str]) -> httpx.Response:
    return client.post(
        f"{server.base_url}/token",
        data={"grant_type": "client_credentials"},
        auth=credentials,
        headers={"Connection": "close"},
    )


def test_readyz_says_limiter_ok_only_when_hits_reach_the_cluster(
    cluster: RedisClusterServers, replicas: tuple[list[AppServer], tuple[str, str]]
) -> None:
    servers, credentials = replicas
    with httpx.Client(timeout=15) as client:
        for server in servers:
            ready = client.get(f"{server.base_url}/readyz")
            assert ready.status_code in (200, 503)
            limiter = ready.json()["checks"]["limiter"]
            assert (ready.status_code == 200) == (limiter == "ok")
            before = cluster.list_entries()
            answer = client.post(
                f"{server.base_url}/revoke", data={"token": "not-a-token"}, auth=credentials
            )
            assert answer.status_code == 200, answer.text  # never a 5xx
            stored = cluster.list_entries() == before + 1
            print(f"\n{server.base_url}: /readyz limiter {limiter}; hit stored: {stored}")
            if limiter == "ok":
                assert stored, "readyz said ok but the hit did not reach the cluster"


def test_token_issuance_counts_exactly_across_two_processes_on_a_cluster(
    cluster: RedisClusterServers, replicas: tuple[list[AppServer], tuple[str, str]]
) -> None:
    servers, credentials = replicas
    with httpx.Client(timeout=15) as client:
        answers = [token(client, servers[n % 2], credentials) for n in range(REQUESTS)]
    statuses = [a.status_code for a in answers]
    print(f"\n/token x {REQUESTS} over two processes, limit {LIMIT}: {statuses}")
    assert statuses == [200] * LIMIT + [429] * (REQUESTS - LIMIT)
    assert cluster.list_entries() >= LIMIT  # SlowAPI's moving window, in the cluster


def predict(client: httpx.Client, server: AppServer, bearer: str) -> httpx.Response:
    return client.post(
        f"{server.base_url}/v1/predict",
        json=V1_HOUSE,
        headers={"Authorization": f"Bearer {bearer}"},
    )


def predict_with(
    client: httpx.Client, _i: int, *, server: AppServer, bearer: str
) -> httpx.Response:
    return predict(client, server, bearer)


def test_the_predict_quota_counts_exactly_across_two_processes_in_one_script_call_each(
    cluster: RedisClusterServers, replicas: tuple[list[AppServer], tuple[str, str]]
) -> None:
    servers, _ = replicas
    key = KEYS["cluster-quota"]
    with httpx.Client(timeout=15) as client:
        holder = cluster.node_of("hq:{predict:default|account:cluster-quota}")
        with holder.monitor() as stop:
            answers = [predict(client, servers[n % 2], key) for n in range(PREDICTS)]
            sent = [c for c in stop() if "cluster-quota" in c]
    statuses = [a.status_code for a in answers]
    print(f"\n/v1/predict x {PREDICTS} over two processes, limit {PREDICT_LIMIT}: {statuses}")
    assert statuses == [200] * PREDICT_LIMIT + [429] * (PREDICTS - PREDICT_LIMIT)
    assert answers[-1].headers["Retry-After"]
    assert answers[PREDICT_LIMIT - 1].headers["X-RateLimit-Remaining"] == "0"
    # one round trip per guarded request: one EVALSHA, on the slot of the account's counter;
    # the first a process sends to a node that lacks the script is followed by one EVAL
    verbs = Counter(command.split()[0] for command in sent)
    assert verbs["EVALSHA"] == PREDICTS, sent
    assert verbs["EVAL"] <= len(servers), sent
    assert set(verbs) <= {"EVALSHA", "EVAL"}, sent
    holders = cluster.quota_keys_per_node("cluster-quota")
    assert [port for port, keys in holders.items() if keys] == [holder.port]


def test_a_primary_killed_and_failed_over_costs_no_5xx_and_counting_resumes_in_the_cluster(
    cluster: RedisClusterServers, replicas: tuple[list[AppServer], tuple[str, str]]
) -> None:
    servers, _ = replicas
    key = KEYS["cluster-failover"]
    with httpx.Client(timeout=15) as client:
        assert predict(client, servers[0], key).status_code == 200
    holders = cluster.quota_keys_per_node("account:cluster-failover")
    [holder] = [port for port, keys in holders.items() if keys]
    load = Load(servers[0].base_url)
    for n, server in enumerate(servers):
        load.caller(f"predict-{n}", partial(predict_with, server=server, bearer=key), pause=0.02)
    load.sleep(1.0)
    killed_at = load.now()
    cluster.kill(holder)
    promoted = cluster.wait_for_failover(holder, timeout=30)
    with httpx.Client(timeout=15) as client:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            ready = [client.get(f"{s.base_url}/readyz").status_code for s in servers]
            if ready == [200, 200]:
                break
            time.sleep(0.2)
        assert ready == [200, 200], "readyz did not come back once the replica took over"
    resumed_at = load.now()
    load.sleep(1.0)
    before = cluster.quota_keys_per_node("account:cluster-failover").get(promoted, 0)
    load.sleep(1.0)
    load.stop()
    summary = load.summary()
    print(
        f"\nkilled {holder} at {killed_at:.1f}s, replica {promoted} took over, "
        f"/readyz 200 on both at {resumed_at:.1f}s: {summary}"
    )
    for caller in summary:
        assert set(summary[caller]) == {"200"}, summary  # no 5xx, no reset, no 429 (limit is high)
    assert before > 0, "after the failover the account's counter lives on the promoted replica"
