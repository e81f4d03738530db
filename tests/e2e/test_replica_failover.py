"""A replica dies mid-run: Nginx routes around it, and only requests in flight on it fail."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e.support import HOUSE_V1, Edge, next_source_address

pytestmark = pytest.mark.slow

CLIENTS = 4
BEFORE_KILL_S = 1.5
AFTER_KILL_S = 2.5
# Between one client's requests: at most CLIENTS / PAUSE_S = 80 requests a second, under
# the edge's per-address shield (100 r/s), like a well-behaved busy partner.
PAUSE_S = 0.05


@dataclass(frozen=True)
class Outcome:
    started: float
    ended: float
    status: int  # 0: no answer at all
    request_id: str


@pytest.fixture
def replica_restarted_after(edge: Edge) -> Iterator[None]:
    """The test kills replica-1; it is back (and ready) for whatever runs next."""
    yield
    stack = edge.stack
    if not stack.processes["replica-1"].alive():
        stack.start_replica(0)
        stack.wait_replica(0)


def test_killing_a_replica_loses_only_its_in_flight_requests(
    edge: Edge, replica_restarted_after: None, artifacts_dir: Path
) -> None:
    headers = {"X-API-Key": edge.credentials.internal_api_key}
    source = next_source_address()
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client_loop() -> None:
        with edge.client(source) as client:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    answer = client.post("/v1/predict", json=HOUSE_V1, headers=headers)
                    status, request_id = answer.status_code, answer.headers["x-request-id"]
                except httpx.TransportError:
                    status, request_id = 0, ""
                with lock:
                    outcomes.append(Outcome(started, time.monotonic(), status, request_id))
                time.sleep(PAUSE_S)

    threads = [threading.Thread(target=client_loop) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(BEFORE_KILL_S)
        kill_started = time.monotonic()
        edge.stack.kill_replica(0)  # SIGKILL to the server and any workers it has
        kill_done = time.monotonic()  # ...and every one of them is gone
        time.sleep(AFTER_KILL_S)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)

    dead, alive = edge.replica_addresses
    log = {e["request_id"]: e for e in edge.log_entries({o.request_id for o in outcomes} - {""})}
    before = [o for o in outcomes if o.ended < kill_started]
    after = [o for o in outcomes if o.started > kill_done]
    failed = [o for o in outcomes if o.status != 200]
    retried = [o for o in outcomes if o.request_id and "," in log[o.request_id]["upstream"]]
    summary = {
        "requests": len(outcomes),
        "before_kill": len(before),
        "after_kill": len(after),
        "failed": len(failed),
        "retried_on_the_other_replica": len(retried),
        "kill_took_ms": round((kill_done - kill_started) * 1000, 1),
    }
    (artifacts_dir / "failover.json").write_text(json.dumps(summary, indent=2) + "\n")
    assert len(before) >= 10, len(before)
    assert len(after) >= 10, len(after)

    # Before the kill both replicas served. The only requests that may fail are those in
    # flight on the killed replica while it died, and Nginx sends even those to the
    # other replica (predictions are retried: proxy_next_upstream ... non_idempotent).
    assert {log[o.request_id]["upstream"] for o in before} == {dead, alive}
    assert len(failed) <= CLIENTS, failed
    for outcome in failed:
        assert outcome.status == 502
        assert outcome.started <= kill_done
        assert outcome.ended >= kill_started
        assert log[outcome.request_id]["upstream"] == dead

    # Every request sent after the kill succeeded, answered by the surviving replica,
    # some of them after Nginx found the dead one refusing connections and moved on.
    assert all(o.status == 200 for o in after)
    final_upstreams = {log[o.request_id]["upstream"].split(", ")[-1] for o in after}
    assert final_upstreams == {alive}
    assert dead in edge.stack.nginx_error_log.read_text()

    # The replica comes back and Nginx uses it again once fail_timeout (5 s) is over.
    edge.stack.start_replica(0)
    edge.stack.wait_replica(0)
    deadline = time.monotonic() + 20
    with edge.client(source) as client:
        while True:
            answer = client.get("/healthz")
            if log_upstream(edge, answer) == dead:
                break
            assert time.monotonic() < deadline, "the restarted replica never got traffic"
            time.sleep(0.2)


def log_upstream(edge: Edge, answer: httpx.Response) -> str:
    [entry] = edge.log_entries({answer.headers["x-request-id"]})
    upstream: str = entry["upstream"]
    return upstream
