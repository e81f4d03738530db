"""Our app, unchanged, under cProfile in every thread; the stats are written at shutdown.

py-spy and pyinstrument are not installed, so this uses the standard library: one
``cProfile.Profile`` per thread (the event loop's and each threadpool worker's, since
the guarded endpoints run in FastAPI's threadpool), timed with ``time.thread_time`` so
a thread waiting for work costs nothing. Start-up (imports, model loading) is cleared
once the lifespan has started; when it shuts down (uvicorn stops on SIGTERM, then
re-raises the signal, so ``atexit`` would never run) the per-thread stats are merged
and dumped to ``BENCH_PROFILE_OUT``.

Deterministic profiling inflates many small Python calls, so read shares, not absolute
times; and a coroutine counts one "call" per resumption, so call counts are only
meaningful for plain functions.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import sys
import threading
import time
from types import FrameType
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.asgi import build as build_ours

_profiles: list[cProfile.Profile] = []
_lock = threading.Lock()


def _new_profile() -> cProfile.Profile:
    profile = cProfile.Profile(time.thread_time)
    with _lock:
        _profiles.append(profile)
    return profile


def _start_in_thread(frame: FrameType, event: str, arg: Any) -> None:
    """``threading.setprofile`` hook: the first event of a new thread starts its profiler."""
    sys.setprofile(None)
    _new_profile().enable()


class _Snapshot:
    """What ``pstats.Stats`` reads, taken without disabling another thread's profiler."""

    def __init__(self, profile: cProfile.Profile) -> None:
        profile.snapshot_stats()
        self.stats = profile.stats  # type: ignore[attr-defined]

    def create_stats(self) -> None:
        return None


def _clear() -> None:
    with _lock:
        for profile in _profiles:
            profile.clear()


def _dump(path: str) -> None:
    _profiles[0].disable()
    with _lock:
        snapshots = [_Snapshot(profile) for profile in _profiles]
    stats = pstats.Stats(snapshots[0])
    for snapshot in snapshots[1:]:
        stats.add(snapshot)
    stats.dump_stats(path)


class ProfileServing:
    """Pass everything through; profile from the end of start-up to the end of shutdown."""

    def __init__(self, app: ASGIApp, path: str) -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_and_profile(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                _clear()
            elif message["type"] == "lifespan.shutdown.complete":
                _dump(self.path)
            await send(message)

        await self.app(scope, receive, send_and_profile)


def build() -> ASGIApp:
    app = build_ours()
    out = os.environ.get("BENCH_PROFILE_OUT")
    if not out:
        return app
    threading.setprofile(_start_in_thread)  # threads started from now on
    _new_profile().enable()  # this (the event loop's) thread
    return ProfileServing(app, out)
