"""What the end-to-end tests share: TLS clients bound to a source address of their own,
the Nginx access log, and the stack's credentials.

Each test talks to the edge from its own loopback address (127.0.0.N; Linux routes all
of 127/8 to lo), so the per-address limits of one test (Nginx's shield, the app's
/token limit) never see another test's traffic.
"""

from __future__ import annotations

import itertools
import json
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from deploy.stack import Stack
from tests.support.houses import V1_HOUSE, V2_HOUSE

REPO = Path(__file__).resolve().parents[2]
HOUSE_V1, HOUSE_V2 = V1_HOUSE, V2_HOUSE
SECURITY_HEADERS = {
    "strict-transport-security": "max-age=63072000; includeSubDomains",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}
EDGE_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

_addresses = itertools.count(10)


def next_source_address() -> str:
    """A loopback address no other test of the session has used (127.0.0.10 onwards)."""
    n = next(_addresses)
    return f"127.0.{n // 250}.{n % 250 + 2}"


@dataclass(frozen=True)
class Credentials:
    client_id: str
    client_secret: str
    api_key: str  # default plan, scopes predict + models:read
    free_api_key: str  # plan "free"
    internal_api_key: str  # plan "internal"
    metrics_api_key: str  # scope metrics


@dataclass
class Edge:
    """The running stack, as the tests see it."""

    stack: Stack
    credentials: Credentials

    @property
    def base_url(self) -> str:
        return self.stack.https_url

    def tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.stack.ca_certificate))

    def client(self, source: str | None = None, *, fresh_connections: bool = False) -> httpx.Client:
        """An HTTPS client trusting only the stack's CA, from ``source`` (a new address
        when None)."""
        transport = httpx.HTTPTransport(
            verify=self.tls_context(),
            local_address=source or next_source_address(),
            limits=httpx.Limits(max_keepalive_connections=0 if fresh_connections else 10),
        )
        return httpx.Client(base_url=self.base_url, transport=transport, timeout=30.0)

    def access_log(self) -> list[dict[str, Any]]:
        return [
            json.loads(line)
            for line in self.stack.nginx_access_log.read_text().splitlines()
            if line.strip()
        ]

    def log_entries(self, request_ids: set[str]) -> list[dict[str, Any]]:
        """The access log lines of these requests. Nginx writes a line after it has sent
        the answer, so a client may read the answer first: wait for them (up to 10 s)."""
        deadline = time.monotonic() + 10.0
        while True:
            entries = [e for e in self.access_log() if e["request_id"] in request_ids]
            if {e["request_id"] for e in entries} >= request_ids or time.monotonic() > deadline:
                return entries
            time.sleep(0.05)

    @property
    def replica_addresses(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.stack.replica_ports]


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    entries = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return entries
