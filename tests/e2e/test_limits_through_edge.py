"""Limits at the edge and behind it: quotas shared by the replicas, the body limit, the
per-address shield."""

from __future__ import annotations

import json
import re
import socket
import ssl
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from limits import parse

from app.settings import Settings
from tests.e2e.support import HOUSE_V1, REPO, Edge, next_source_address

pytestmark = pytest.mark.slow

MAX_BODY: int = Settings.model_fields["max_body_bytes"].default
# The defaults: tests.support.app_server.app_env keeps the caller's settings out.
FREE_LIMIT = parse(Settings.model_fields["rate_limit_plans"].default_factory()["free"]).amount
NGINX_CONF = (REPO / "deploy" / "nginx" / "nginx.conf").read_text()


def _number(pattern: str) -> int:
    match = re.search(pattern, NGINX_CONF)
    assert match is not None, pattern
    return int(match[1])


EDGE_RATE = _number(r"zone=edge_per_ip:\S+ rate=(\d+)r/s;")
EDGE_BURST = _number(r"zone=edge_per_ip burst=(\d+) nodelay;")
EDGE_CONNECTIONS = _number(r"limit_conn edge_conn_per_ip (\d+);")


def test_a_rate_limit_of_n_holds_exactly_n_across_both_replicas(edge: Edge) -> None:
    headers = {"X-API-Key": edge.credentials.free_api_key}
    extra = FREE_LIMIT // 2
    with edge.client(fresh_connections=True) as client:
        answers = [
            client.post("/v1/predict", json=HOUSE_V1, headers=headers)
            for _ in range(FREE_LIMIT + extra)
        ]
    statuses = [a.status_code for a in answers]
    assert statuses == [200] * FREE_LIMIT + [429] * extra
    refused = answers[-1]
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["ratelimit-policy"].startswith(f'"{FREE_LIMIT}-per-60s"')
    assert int(refused.headers["retry-after"]) >= 1

    # Both replicas answered, and counted against the one quota in Redis.
    entries = edge.log_entries({a.headers["x-request-id"] for a in answers})
    served = Counter(e["upstream"] for e in entries if e["status"] == 200)
    assert set(served) == set(edge.replica_addresses), served
    assert sum(served.values()) == FREE_LIMIT


def test_an_oversized_body_is_refused_by_nginx(edge: Edge) -> None:
    json_headers = {"Content-Type": "application/json", "X-API-Key": edge.credentials.api_key}
    with edge.client() as client:
        declared = client.post("/v1/predict", content=b" " * (MAX_BODY + 1), headers=json_headers)

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
            for _ in range(MAX_BODY // 65536 + 1):
                yield b" " * 65536

        chunked = client.post("/v1/predict", content=chunks(), headers=json_headers)
        # Exactly MAX_BODY_BYTES passes the edge and reaches the app (its answer: 422).
        at_limit = client.post("/v1/predict", content=b" " * MAX_BODY, headers=json_headers)

    for answer in (declared, chunked):
        assert answer.status_code == 413
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["detail"].endswith(f"limit of {MAX_BODY} bytes.")
    assert at_limit.status_code == 422

    ids = {a.headers["x-request-id"] for a in (declared, chunked, at_limit)}
    entries = {e["request_id"]: e for e in edge.log_entries(ids)}
    for answer in (declared, chunked):
        # Refused by Nginx: no replica was ever asked.
        assert entries[answer.headers["x-request-id"]]["upstream"] == ""
    assert entries[at_limit.headers["x-request-id"]]["upstream"] in edge.replica_addresses


def test_the_shield_caps_requests_per_address(edge: Edge, artifacts_dir: Path) -> None:
    """limit_req: from one address, at most burst + rate x elapsed requests get through;
    the rest are refused at once with a 429 problem. Another address is unaffected."""
    source = next_source_address()
    sent = 3 * EDGE_BURST
    with edge.client(source) as client:

        def one(_: int) -> httpx.Response:
            return client.get("/healthz")

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=16) as pool:
            answers = list(pool.map(one, range(sent)))
        elapsed = time.monotonic() - started
    counts = Counter(a.status_code for a in answers)
    summary = {"sent": sent, "seconds": round(elapsed, 2), "accepted": counts[200]}
    summary |= {"refused": counts[429], "allowed_at_most": EDGE_BURST + EDGE_RATE * elapsed}
    (artifacts_dir / "shield.json").write_text(json.dumps(summary, indent=2) + "\n")
    assert set(counts) <= {200, 429}, counts
    assert counts[200] <= EDGE_BURST + EDGE_RATE * elapsed + 1, (counts, elapsed)
    assert counts[429] > 0, f"{sent} requests in {elapsed:.2f}s were all let through"
    refused = next(a for a in answers if a.status_code == 429)
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["type"].endswith("edge-rate-limited")
    assert refused.headers["retry-after"] == "1"

    with edge.client() as other:
        assert other.get("/healthz").status_code == 200


def _open_request(edge: Edge, source: str) -> ssl.SSLSocket:
    """A POST whose headers have arrived and whose body never does: in flight."""
    raw = socket.create_connection(("127.0.0.1", edge.stack.https_port), source_address=(source, 0))
    tls = edge.tls_context().wrap_socket(raw, server_hostname="localhost")
    tls.sendall(
        b"POST /v1/predict HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    )
    return tls


def test_the_shield_caps_concurrent_requests_per_address(edge: Edge) -> None:
    """limit_conn: with EDGE_CONNECTIONS requests in flight from one address, the next
    one is refused at once; once they are gone, requests pass again."""
    source = next_source_address()
    held = []
    try:
        for _ in range(EDGE_CONNECTIONS):
            held.append(_open_request(edge, source))
        time.sleep(0.5)  # Nginx has read every request's headers
        with edge.client(source) as client:
            refused = client.get("/healthz")
        assert refused.status_code == 429
        assert json.loads(refused.text)["type"].endswith("edge-rate-limited")
        with edge.client() as other:
            assert other.get("/healthz").status_code == 200
    finally:
        for tls in held:
            tls.close()
    deadline = time.monotonic() + 10
    with edge.client(source) as client:
        while (status := client.get("/healthz").status_code) != 200:
            assert time.monotonic() < deadline, status
            time.sleep(0.2)
