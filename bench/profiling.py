"""py-spy recordings of a running server, and their "flame summary".

``record`` starts ``py-spy record --pid P --nonblocking`` (sampling without stopping
the server) and ``finish`` waits for it, keeping its sample and error counts and its
own CPU time. ``summarize`` reads py-spy's raw output (collapsed stacks, one line per
distinct stack: ``process ...;func (/path/file.py:12);... COUNT``) into shares by
package, top functions by self samples and top functions by inclusive samples.

Two views, recorded one after the other (``bench.run.profile``):

* ``--gil``: only the thread holding the GIL is sampled, so a sample is Python work
  (or C called from Python without releasing the GIL) that nothing else could do at
  that moment. That is the honest CPU view of a one-worker Python server. Native code
  that releases the GIL (NumPy inside the model) is missing from it.
* without ``--gil``: every thread with a Python stack. In ``--nonblocking`` mode py-spy
  cannot tell a running thread from one blocked on a lock or waiting for the GIL, so
  idle leaves (``IDLE_LEAVES``) are dropped and what is left still over-counts threads
  that wait for the GIL; its shares are shown beside the GIL view, never alone.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import servers

RATE = 250  # samples per second and thread
# Leaf frames of a thread that waits for work: anyio's idle threadpool workers
# (Condition.wait), other waits, and the event loop's thread inside uvloop's C loop
# (``Runner.run`` is its last Python frame; mostly epoll_wait). An empty stack is a
# thread without a Python frame. Only the all-threads view drops them.
IDLE_LEAVES = (
    "Condition.wait (",
    "Event.wait (",
    "Queue.get (",
    "SimpleQueue.get (",
    "_worker (",  # concurrent.futures' thread pool, in SimpleQueue.get (C)
    "BaseSelector.select (",
    "EpollSelector.select (",
    "select (",
    "Runner.run (",
    "Thread.join (",
    "Thread._wait_for_tstate_lock (",
)
# Entry-point frames under every request (CLI, server start, thread start): left out of
# the inclusive table, where they would only say "everything".
SCAFFOLD = re.compile(
    r"^(<module> \(|Typer\.|TyperGroup\.|Command\.|Context\.invoke \(|_main \(typer/"
    r"|get_callback\.|serve \(cli/|run \(uvicorn/|Server\.\w+ \(uvicorn/|asyncio_run \("
    r"|Runner\.run \(|run \(asyncio/|Thread\._bootstrap|Thread\.run \(|WorkerThread\.run \()"
)
# Our packages, in the working tree or in a run's snapshot of it (not site-packages).
_OURS = re.compile(
    r"/(app|auth|ml|cli|bench|monitoring|db|deploy|migrations)/[^/]+(?:/[^/]+)*\.py$"
)
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
_COUNTS = re.compile(r"Samples: (\d+) Errors: (\d+)")


class ProfilerFailed(RuntimeError):
    pass


def binary() -> Path:
    """The venv's py-spy (a dev dependency), else one on PATH."""
    local = servers.BIN / "py-spy"
    if os.access(local, os.X_OK):
        return local
    found = shutil.which("py-spy")
    if found is None:
        raise ProfilerFailed("py-spy not found: install the dev extras (`make install`)")
    return Path(found)


def version() -> str:
    done = subprocess.run(
        [str(binary()), "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    return (done.stdout or done.stderr).strip() or "py-spy (unknown version)"


@dataclass
class Recording:
    popen: subprocess.Popen[bytes]
    out: Path
    log: Path
    seconds: float
    argv: list[str] = field(default_factory=list)


def record(pid: int, out: Path, seconds: int, *, gil: bool, fmt: str = "raw") -> Recording:
    """Start sampling ``pid`` for ``seconds`` into ``out`` (``raw`` or ``flamegraph``)."""
    argv = [
        str(binary()),
        "record",
        "--pid",
        str(pid),
        "--format",
        fmt,
        "-o",
        str(out),
        "--duration",
        str(seconds),
        "--rate",
        str(RATE),
        "--nonblocking",
    ]
    if fmt == "raw":
        argv.append("--full-filenames")  # to tell our packages, site-packages and stdlib apart
    if gil:
        argv.append("--gil")
    log = out.with_suffix(out.suffix + ".log")
    with log.open("wb") as sink:
        popen = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT)
    return Recording(popen, out, log, seconds, argv)


def finish(recording: Recording) -> dict[str, Any]:
    """Wait for py-spy; its counts, its own CPU time, or the error it reported."""
    pid = recording.popen.pid
    deadline = time.monotonic() + recording.seconds + 30
    status, cpu = None, 0.0
    while status is None:
        done, raw_status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            status, cpu = raw_status, usage.ru_utime + usage.ru_stime
        elif time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # our own py-spy, by its PID
            _, status, usage = os.wait4(pid, 0)
            cpu = usage.ru_utime + usage.ru_stime
        else:
            time.sleep(0.05)
    recording.popen.returncode = os.waitstatus_to_exitcode(status)
    text = recording.log.read_text(errors="replace") if recording.log.exists() else ""
    out: dict[str, Any] = {
        "argv": " ".join(["py-spy", *recording.argv[1:]]),
        "returncode": recording.popen.returncode,
        "py_spy_cpu_s": cpu,
    }
    counts = _COUNTS.search(text)
    if counts:
        out["samples"], out["errors"] = int(counts.group(1)), int(counts.group(2))
    if recording.popen.returncode != 0 or not recording.out.exists():
        out["error"] = f"py-spy exited {recording.popen.returncode}: {text.strip()[-1500:]}"
    return out


# --- the summary -------------------------------------------------------------------


def parse_frame(text: str) -> tuple[str, str, int]:
    """``func (/path/file.py:12)`` as (func, file, line); unparsable frames keep their text."""
    match = _FRAME.match(text)
    if match is None:
        return text, "", 0
    return match.group("func"), match.group("file"), int(match.group("line") or 0)


def read_raw(path: Path) -> list[tuple[list[str], int]]:
    """py-spy's raw lines as (frames root first, without the process frame, count)."""
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        if frames and frames[0].startswith("process "):
            frames = frames[1:]
        stacks.append(([f for f in frames if f], int(count)))
    return stacks


def area(file: str) -> str:
    """Which package a file belongs to: ours, a site-packages distribution or the stdlib."""
    path = file.replace("\\", "/")
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    ours = _OURS.search(path)
    if ours:
        return ours.group(1)
    match = re.search(r"/lib/python3\.\d+/([^/]+)", path)
    if match:
        return "stdlib:" + match.group(1).removesuffix(".py")
    return path.rsplit("/", 1)[-1]


def short_path(file: str) -> str:
    """``fastapi/routing.py``, ``app/security.py``, ``threading.py``: no install prefix."""
    path = file.replace("\\", "/")
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1]
    ours = _OURS.search(path)
    if ours:
        return path[ours.start() + 1 :]
    match = re.search(r"/lib/python3\.\d+/(.+)$", path)
    if match:
        return match.group(1)
    return path.rsplit("/", 1)[-1]


def _name(frame: str) -> str:
    """A frame as the tables show it: function and shortened file, without the line."""
    func, file, _line = parse_frame(frame)
    return f"{func} ({short_path(file)})" if file else func


def _area_of(frame: str) -> str:
    func, file, _line = parse_frame(frame)
    if not file:
        return "(no Python frame)"
    if func == "Runner.run" and file.endswith("asyncio/runners.py"):
        return "uvloop (C event loop)"  # the loop's own C code, below its last Python frame
    return area(file)


# Where a sample's time goes on a guarded request: the innermost frame (leaf first)
# whose file says which part of the request it serves. Generic frames (the standard
# library, typing, anyio's plumbing, SQLAlchemy, ...) say nothing and are passed over,
# so ``json.loads`` under FastAPI counts as FastAPI and SQLAlchemy under the verifier
# as authentication. First match wins, in this order, for each frame.
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("guard", ("app/guard.py",)),
    ("auth", ("app/security.py", "app/single_flight.py", "auth/", "jose/", "jwt/", "ecdsa/")),
    ("quota", ("app/quota.py", "app/limits.py", "limits/", "slowapi/", "redis/")),
    (
        "log and metrics",
        (
            "app/request_context.py",
            "monitoring/",
            "logging/",
            "prometheus_client/",
            "opentelemetry/",
        ),
    ),
    ("model", ("app/routes/predict.py", "ml/", "numpy/", "sklearn/", "scipy/")),
    (
        "FastAPI",
        ("fastapi/", "starlette/", "pydantic/", "pydantic_core/", "annotated_types/", "app/"),
    ),
    ("server", ("uvicorn/", "uvloop/", "httptools/", "h11/", "gunicorn/", "uvicorn_worker/")),
)
PART_NAMES = (*(name for name, _ in PARTS), "event loop and other")
# Functions of the prediction route that are not the model: its body parser (FastAPI's
# documented hook) and what it hands the log and the metrics.
FUNCTION_PARTS: tuple[tuple[str, str, str], ...] = (
    ("app/routes/predict.py", "_OrjsonRequest.", "FastAPI"),
    ("app/routes/predict.py", "_OrjsonRoute.", "FastAPI"),
    ("app/routes/predict.py", "_record", "log and metrics"),
    ("app/routes/predict.py", "_note", "log and metrics"),
)


def part_of_file(file: str, func: str = "") -> str | None:
    """The part a frame of ``func`` in ``file`` serves, None for a generic one."""
    path = short_path(file)
    for where, prefix, name in FUNCTION_PARTS:
        if path == where and func.startswith(prefix):
            return name
    for name, prefixes in PARTS:
        if path.startswith(prefixes):
            return name
    return None


def part_of(frames: list[str]) -> str:
    """The part of the request a sample's stack serves (leaf first, generic frames passed
    over); a stack of generic frames only is the event loop's own (or another thread's)."""
    for frame in reversed(frames):
        func, file, _line = parse_frame(frame)
        found = part_of_file(file, func) if file else None
        if found is not None:
            return found
    return "event loop and other"


def is_idle(frames: list[str]) -> bool:
    return not frames or frames[-1].startswith(IDLE_LEAVES)


def summarize(
    path: Path, *, drop_idle: bool, us_per_request: float | None = None, top: int = 25
) -> dict[str, Any]:
    """Shares of the samples in ``path`` by package, self function and inclusive function.

    ``us_per_request``, when given, is what all kept samples stand for per request; every
    share is also given times it.
    """
    stacks = read_raw(path)
    total = sum(count for _, count in stacks)
    idle: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    parts: Counter[str] = Counter()
    for frames, count in stacks:
        if drop_idle and is_idle(frames):
            idle[_name(frames[-1]) if frames else "(no Python frame)"] += count
            continue
        leaf = frames[-1] if frames else "(no Python frame)"
        areas[_area_of(leaf)] += count
        parts[part_of(frames)] += count
        self_counts[_name(leaf) if frames else leaf] += count
        worker = any(f.startswith("Thread._bootstrap_inner (") for f in frames[:3])
        threads["threadpool and other threads" if worker else "event loop thread"] += count
        seen = set()
        for frame in frames:
            name = _name(frame)
            if name in seen or SCAFFOLD.match(name):
                continue
            seen.add(name)
            inclusive[name] += count
    kept = max(1, sum(areas.values()))

    def rows(counter: Counter[str], key: str, limit: int | None) -> list[dict[str, Any]]:
        out = []
        for name, count in counter.most_common(limit):
            row: dict[str, Any] = {key: name, "samples": count, "share": count / kept}
            if us_per_request is not None:
                row["us_per_request"] = count / kept * us_per_request
            out.append(row)
        return out

    return {
        "samples": total,
        "idle_samples": sum(idle.values()),
        "kept_samples": sum(areas.values()),
        "idle_leaves": dict(idle.most_common(8)),
        "threads": {name: count / kept for name, count in threads.most_common()},
        "us_per_request": us_per_request,
        "areas": rows(areas, "area", None),
        "parts": rows(parts, "part", None),
        "top_self": rows(self_counts, "function", top),
        "top_inclusive": rows(inclusive, "function", top + 10),
    }
