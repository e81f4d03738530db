"""One store read at a time per credential, shared by every request that needs it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial

from starlette.concurrency import run_in_threadpool

from auth.principal import Principal


class SingleFlight:
    """One store read at a time per credential.

    When a credential's cache entry expires, every request presenting it at that moment
    needs the store; without this, 32 concurrent requests of one client made 32 reads
    (each with a thread hand-off) every refresh interval. They now share the first
    one's answer, or its refusal: the credential is the same.
    """

    def __init__(self) -> None:
        self._inflight: dict[str, asyncio.Task[Principal]] = {}

    async def run(self, key: str, read: Callable[[], Principal]) -> Principal:
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(run_in_threadpool(read))
            self._inflight[key] = task
            task.add_done_callback(partial(self._done, key))
        # Shielded: a caller that goes away does not cancel the others' answer.
        return await asyncio.shield(task)

    def _done(self, key: str, task: asyncio.Task[Principal]) -> None:
        self._inflight.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved, even if every waiter went away
