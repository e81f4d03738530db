"""Concurrent requests with one credential share one store read when its cache expires."""

from __future__ import annotations

import asyncio
import threading

import pytest

from app.single_flight import SingleFlight
from auth.principal import Principal

pytestmark = pytest.mark.anyio

CALLER = Principal(kind="client", subject="cl_x", scopes=frozenset({"predict"}))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_concurrent_callers_share_one_read() -> None:
    flights, reads, release = SingleFlight(), [], threading.Event()

    def read() -> Principal:
        reads.append(1)
        release.wait(5)
        return CALLER

    waiters = [asyncio.create_task(flights.run("token", read)) for _ in range(32)]
    await asyncio.sleep(0.05)
    release.set()
    assert await asyncio.gather(*waiters) == [CALLER] * 32
    assert len(reads) == 1


async def test_a_refusal_is_shared_and_the_next_caller_reads_again() -> None:
    flights, reads = SingleFlight(), []

    def refuse() -> Principal:
        reads.append(1)
        raise LookupError("revoked")

    results = await asyncio.gather(
        *(flights.run("token", refuse) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, LookupError) for r in results)
    with pytest.raises(LookupError):
        await flights.run("token", refuse)  # nothing is cached once the read is over
    assert len(reads) == 2


async def test_a_caller_that_goes_away_does_not_cancel_the_others() -> None:
    flights, release = SingleFlight(), threading.Event()

    def read() -> Principal:
        release.wait(5)
        return CALLER

    leaver = asyncio.create_task(flights.run("token", read))
    stayer = asyncio.create_task(flights.run("token", read))
    await asyncio.sleep(0.05)
    leaver.cancel()
    release.set()
    assert await stayer == CALLER
