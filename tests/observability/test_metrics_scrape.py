"""/metrics scraped as Prometheus scrapes it: under two gunicorn workers, with the
credential the README documents (an OAuth2 client with scope ``metrics``, as Prometheus'
``oauth2`` block fetches it, or an API key header), parsed by prometheus-client's own
text parser; ``process_*`` and ``python_*`` present and true for every process."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.app_server import AppServer, app_env, run_cli, running_app

pytestmark = pytest.mark.slow

PROCESS_METRICS = {
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_start_time_seconds",
    "process_open_fds",
}
GC_METRICS = {
    "python_gc_collections_total",
    "python_gc_objects_collected_total",
    "python_gc_objects_uncollectable_total",
}


def families(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name].append((sample.labels, sample.value))
    return found


def scrape_from_each_worker(server: AppServer, headers: dict[str, str]) -> dict[int, str]:
    """One exposition answered by each worker (new connections until both answered)."""
    answers: dict[int, str] = {}
    for _ in range(60):
        response, pid = server.get_from_worker("/metrics", headers=headers)
        assert response.status_code == 200, response.text
        answers[pid] = response.text
        if len(answers) == server.workers:
            return answers
    raise AssertionError(f"only workers {sorted(answers)} answered")


def prometheus_token(base_url: str, client_id: str, secret: str) -> str:
    """What Prometheus' ``oauth2`` block does: client_credentials with HTTP Basic."""
    answer = httpx.post(
        f"{base_url}/token",
        data={"grant_type": "client_credentials", "scope": "metrics"},
        auth=(client_id, secret),
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def test_scrape_under_two_gunicorn_workers(tmp_path: Path, trained_model_dir: Path) -> None:
    root = tmp_path / "server"
    root.mkdir()
    env = app_env({"VAR_DIR": str(root / "var"), "MODEL_DIR": str(trained_model_dir)})
    key = json.loads(
        run_cli(env, root, "keys", "create", "--owner", "prometheus", "--scopes", "metrics",
                "--json").stdout
    )["api_key"]  # fmt: skip
    oauth = json.loads(
        run_cli(env, root, "clients", "create", "prometheus", "--scopes", "metrics", "--json")
        .stdout
    )  # fmt: skip
    with running_app(root, env, workers=2) as server:
        workers = set(server.processes()) - {server.process.pid}
        assert len(workers) == 2
        token = prometheus_token(server.base_url, oauth["client_id"], oauth["client_secret"])
        by_token = scrape_from_each_worker(server, {"Authorization": f"Bearer {token}"})
        by_key = scrape_from_each_worker(server, {"X-API-Key": key})

    for text in [*by_token.values(), *by_key.values()]:
        metrics = families(text)  # prometheus-client's parser accepts the whole exposition
        assert metrics.keys() >= PROCESS_METRICS
        for name in PROCESS_METRICS:
            pids = {labels["pid"]: labels["role"] for labels, _ in metrics[name]}
            # Every process of the server, whichever worker answered.
            assert pids == {str(server.process.pid): "master"} | {
                str(pid): "worker" for pid in workers
            }, name
        memory = [value for _, value in metrics["process_resident_memory_bytes"]]
        assert all(value > 10 * 2**20 for value in memory)
        assert metrics.keys() >= GC_METRICS
        generations = {labels["generation"] for labels, _ in metrics["python_gc_collections_total"]}
        assert generations == {"0", "1", "2"}
        assert sum(value for _, value in metrics["python_gc_collections_total"]) > 0
        [(info, _)] = metrics["python_info"]
        assert info["implementation"] == "CPython"
        assert metrics["model_info"]
