"""Slow bodies cannot starve the model, on a worker reached directly (no Nginx in front).

Hundreds of connections drip prediction bodies one byte every 2 s: 200 with no
credentials and 100 with a valid key of an account with quota to spend (the abusive
paying customer), beside four callers sending normal predictions as fast as they are
answered. The normal callers keep >= 99 % success with a bounded p99: the anonymous
drips are refused before their body is read, and the paying ones never hold a place the
model's budget (``MAX_INFLIGHT_PREDICTIONS``, default 32) counts: at most
``MAX_CONCURRENT_BODY_READS`` (16) of them may be arriving at once, the rest get 503,
and the whole-body deadline ends each with 408.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from auth.wiring import open_store
from migrations import upgrade_schema
from tests.faults.support import Load, deployment_config, percentile, transport_errors
from tests.support.app_server import AppServer, app_env, running_app
from tests.support.houses import V1_HOUSE

pytestmark = pytest.mark.slow

ANONYMOUS = 200
PAYING = 100
GAP_S = 2.0
DECLARED = 400  # bytes a dripping body says it has: at a byte per GAP_S, never whole
BODY_DEADLINE_S = 3


class SlowSenders:
    """``count`` connections that each send a prediction's headers, then one body byte
    every ``GAP_S`` seconds whatever the server answers, and reconnect (after a gap)
    when it closes. Runs its own event loop in a thread; records every status."""

    def __init__(self, port: int, count: int, headers: dict[str, str]) -> None:
        self.port, self.count = port, count
        lines = [
            "POST /v1/predict HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Content-Type: application/json",
            f"Content-Length: {DECLARED}",
        ] + [f"{name}: {value}" for name, value in headers.items()]
        self.head = ("\r\n".join(lines) + "\r\n\r\n").encode()
        self.statuses: Counter[str] = Counter()
        self.connected = 0
        self.open = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> SlowSenders:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    async def _run(self) -> None:
        await asyncio.gather(*(self._connection(n) for n in range(self.count)))

    async def _connection(self, n: int) -> None:
        await asyncio.sleep(n * 0.005)  # open them over a second or two, not in one burst
        while not self._stop.is_set():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                self.statuses["connect refused"] += 1
                await asyncio.sleep(GAP_S)
                continue
            self.connected += 1
            self.open += 1
            try:
                await self._drip(reader, writer)
            except OSError:
                self.statuses["reset"] += 1
            finally:
                self.open -= 1
                writer.close()
            await asyncio.sleep(GAP_S)

    async def _drip(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(self.head)
        await writer.drain()
        for _ in range(DECLARED):
            if self._stop.is_set():
                return
            try:
                data = await asyncio.wait_for(reader.read(65536), timeout=GAP_S)
            except TimeoutError:
                data = None
            if data == b"":
                return  # the server closed the connection
            if data:
                for line in data.split(b"\r\n"):
                    if line.startswith(b"HTTP/1.1 "):
                        self.statuses[line[9:12].decode()] += 1
            writer.write(b" ")
            await writer.drain()


@pytest.fixture(scope="module")
def deployment(
    trained_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[AppServer, str, str]]:
    root = tmp_path_factory.mktemp("faults-slow-bodies")
    values, settings = deployment_config(
        root,
        trained_model_dir,
        BODY_READ_TIMEOUT_SECONDS=str(BODY_DEADLINE_S),
        MAX_INFLIGHT_PREDICTIONS="32",  # the default: the drips must not take its places
        PREDICTION_LOG_ENABLED="false",
    )
    with open_store(settings, upgrade_schema) as store:
        normal = store.api_keys.create("normal", "predict")[1]
        abuser = store.api_keys.create("abuser", "predict")[1]
    with running_app(root / "server", app_env(values)) as server:
        yield server, normal, abuser


def test_slow_bodies_anonymous_and_paying_never_starve_normal_predictions(
    deployment: tuple[AppServer, str, str],
) -> None:
    server, normal, abuser = deployment
    port = int(server.base_url.rsplit(":", 1)[1])

    def predict(client: httpx.Client, _: int) -> httpx.Response:
        return client.post("/v1/predict", json=V1_HOUSE, headers={"X-API-Key": normal})

    load = Load(server.base_url)
    for n in range(4):
        load.caller(f"normal-{n}", predict)
    load.sleep(2.0)
    quiet = (0.0, load.now())
    with (
        SlowSenders(port, ANONYMOUS, {}) as anonymous,
        SlowSenders(port, PAYING, {"X-API-Key": abuser}) as paying,
    ):
        while anonymous.open + paying.open < 0.95 * (ANONYMOUS + PAYING):
            load.sleep(0.1)
        flood = load.now()
        held_open = []
        for _ in range(2 * int(BODY_DEADLINE_S + 3)):  # past the deadline: 408s, reconnects
            load.sleep(0.5)
            held_open.append(anonymous.open + paying.open)
        flooded = (flood, load.now())
    load.stop()

    before = [e for e in load.exchanges if quiet[0] <= e.at < quiet[1]]
    during = [e for e in load.exchanges if flooded[0] <= e.at < flooded[1]]
    ok = [e for e in during if e.status == 200]
    p99_before = percentile([e.seconds for e in before], 0.99)
    p99_during = percentile([e.seconds for e in during], 0.99)
    print(
        f"\n{ANONYMOUS} anonymous + {PAYING} paying slow connections (min open {min(held_open)}); "
        f"normal callers: {len(ok)}/{len(during)} answered 200 during the flood, p99 "
        f"{p99_before * 1000:.1f} ms before, {p99_during * 1000:.1f} ms during; "
        f"anonymous saw {dict(anonymous.statuses)}, paying saw {dict(paying.statuses)}"
    )
    assert transport_errors(load.exchanges) == []
    assert len(during) >= 100, "the normal callers were hardly answered at all"
    assert len(ok) >= 0.99 * len(during), Counter(e.status for e in during)
    assert p99_during < max(0.5, 10 * p99_before)
    # The flood was real: the connections stayed open and dripping the whole time.
    assert min(held_open) >= 0.9 * (ANONYMOUS + PAYING)
    assert set(anonymous.statuses) == {"401"}
    # Paying drips: a few are arriving at once (then 408 at the deadline), the rest 503.
    assert set(paying.statuses) <= {"503", "408"}
    assert paying.statuses["408"] >= 1
    assert paying.statuses["503"] >= PAYING - 16
