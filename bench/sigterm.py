"""SIGTERM under load, N times: does any request sent to the server get lost?

Run: ``python -m bench.sigterm [--runs 20] [--workers 1] [--threads 8] [--model-dir DIR]``.

Each run starts ``housing-api serve`` on a free loopback port, sends predictions from
``--threads`` clients, each on its own keep-alive connection (httpx, as a partner's
SDK would), and once ``--before`` answers have come back sends SIGTERM to the server
(the gunicorn master with ``--workers N``). Every client keeps sending until the
server is gone. Each request ends one of three ways:

* **answered**: a status came back (the server's own log must say the same status);
* **refused**: the connection could not be opened (``ConnectError``): the server had
  stopped listening, nothing was sent, so retrying elsewhere is always safe;
* **lost**: it was sent, or may have been, and no answer came (a reset, or the
  connection closed under it): the client cannot know whether it ran.

A run passes when nothing is lost and every request the server logged was answered
with that status. The report prints each run and the total; the exit status is 0 only
if every run passed. The fault suite runs a shorter loop of the same code
(tests/faults/test_sigterm.py).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.servers import Process, ours
from deploy.processes import stop_group

HOUSE = {"lotsize": 5850, "bedrooms": 3, "bathrms": 1, "stories": 2, "garagepl": 1}
ENV_DROPPED = ("REDIS_URL", "DATABASE_URL", "GUNICORN_CMD_ARGS", "PROMETHEUS_MULTIPROC_DIR")


@dataclass
class RunResult:
    run: int
    answered: Counter[int] = field(default_factory=Counter)
    refused: int = 0
    lost: list[str] = field(default_factory=list)  # "<request id>: <error>"
    mismatched: list[str] = field(default_factory=list)  # logged by the server, not answered
    exit_code: int | None = None
    seconds: float = 0.0
    start_seconds: float = 0.0  # until every worker answered
    stop_seconds: float = 0.0  # from SIGTERM to the server's exit

    @property
    def passed(self) -> bool:
        return not self.lost and not self.mismatched and self.exit_code in (0, -signal.SIGTERM)

    def line(self) -> str:
        answered = ", ".join(f"{n} x {status}" for status, n in sorted(self.answered.items()))
        verdict = "ok" if self.passed else "LOST"
        return (
            f"run {self.run:2d}: {verdict:4s} answered {answered}; refused before sending "
            f"{self.refused}; lost {len(self.lost)}; logged but unanswered "
            f"{len(self.mismatched)}; exit {self.exit_code} {self.stop_seconds:.1f}s after "
            f"SIGTERM; started in {self.start_seconds:.1f}s"
            + ("".join(f"\n    {item}" for item in self.lost + self.mismatched))
        )


def server_env(root: Path, model_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_DROPPED}
    env.update(
        {
            "APP_ENV": "development",
            "VAR_DIR": str(root / "var"),
            "MODEL_DIR": str(model_dir),
            "RATE_LIMIT_PREDICT": "1000000/minute",
            "RATE_LIMIT_AUTH_FAILURES": "1000000/minute",
            "MAX_INFLIGHT_PREDICTIONS": "1000",
            "DRIFT_REFRESH_SECONDS": "0",
        }
    )
    return env


def create_key(root: Path, env: dict[str, str]) -> str:
    cli = Path(sys.executable).with_name("housing-api")
    created = subprocess.run(
        [str(cli), "keys", "create", "--owner", "sigterm", "--scopes", "predict", "--json"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    key: str = json.loads(created.stdout)["api_key"]
    return key


def logged_statuses(stderr: str) -> dict[str, int]:
    """request id -> status of every prediction the server's JSON log says it answered."""
    found = {}
    for line in stderr.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if not isinstance(event, dict) or event.get("message") != "request":
            continue
        if event.get("route") == "/v1/predict":
            found[str(event["request_id"])] = int(event["status"])
    return found


def terminate_under_load(
    result: RunResult,
    base_url: str,
    popen: subprocess.Popen[bytes],
    stderr_log: Path,
    key: str,
    *,
    threads: int,
    before: int,
) -> RunResult:
    """Load a running server, SIGTERM it (``popen``: the server, or gunicorn's master)
    after ``before`` answers, wait for its exit and account for every request."""
    outcomes: dict[str, int | str] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def load(n: int) -> None:
        with httpx.Client(base_url=base_url, headers={"X-API-Key": key}, timeout=30) as c:
            for i in range(1_000_000):
                if stop.is_set():
                    return
                rid = f"run{result.run}-t{n}-{i:06d}"
                try:
                    answer = c.post("/v1/predict", json=HOUSE, headers={"X-Request-ID": rid})
                    outcome: int | str = answer.status_code
                except httpx.ConnectError:
                    outcome = "refused"
                except httpx.TransportError as exc:
                    outcome = f"{type(exc).__name__}: {exc}"
                with lock:
                    outcomes[rid] = outcome
                if outcome == "refused":
                    return  # the server stopped listening: it is going away

    loaders = [threading.Thread(target=load, args=(n,)) for n in range(threads)]
    try:
        for thread in loaders:
            thread.start()
        deadline = time.monotonic() + 60
        while sum(o == 200 for o in list(outcomes.values())) < before:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no load answered within 60 s: {Counter(outcomes.values())}")
            time.sleep(0.01)
        os.kill(popen.pid, signal.SIGTERM)
        signalled = time.monotonic()
        result.exit_code = popen.wait(timeout=60)
        result.stop_seconds = time.monotonic() - signalled
    finally:
        stop.set()
        for thread in loaders:
            thread.join(timeout=60)
    for rid, outcome in outcomes.items():
        if isinstance(outcome, int):
            result.answered[outcome] += 1
        elif outcome == "refused":
            result.refused += 1
        else:
            result.lost.append(f"{rid}: {outcome}")
    stderr = stderr_log.read_text(errors="replace")
    prefix = f"run{result.run}-"  # the server may have logged other requests before
    for rid, status in logged_statuses(stderr).items():
        if rid.startswith(prefix) and outcomes.get(rid) != status:
            result.mismatched.append(f"{rid}: logged {status}, client saw {outcomes.get(rid)}")
    return result


def one_run(
    run: int, root: Path, env: dict[str, str], key: str, *, workers: int, threads: int, before: int
) -> RunResult:
    """Start a server, load it, SIGTERM it, and account for every request."""
    result = RunResult(run)
    server: Process = ours(f"sigterm-{run}", root / f"run-{run}", env, workers)
    started = time.monotonic()
    server.start()
    try:
        server.wait_ready()
        result.start_seconds = time.monotonic() - started
        assert server.popen is not None
        terminate_under_load(
            result,
            server.base_url,
            server.popen,
            server.root / "stderr.log",
            key,
            threads=threads,
            before=before,
        )
    finally:
        if server.popen is not None:
            stop_group(server.popen, 30)
    result.seconds = time.monotonic() - started
    return result


def run_many(
    model_dir: Path,
    runs: int,
    *,
    workers: int = 1,
    threads: int = 8,
    before: int = 200,
    keep: Path | None = None,
    report: Callable[[RunResult], None] | None = None,
) -> list[RunResult]:
    """``runs`` runs, each handed to ``report`` as it ends; their files (servers' logs)
    go to ``keep``, else a temp dir."""
    results = []
    with tempfile.TemporaryDirectory(prefix="housing-sigterm-") as tmp:
        root = keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        env = server_env(root, model_dir)
        key = create_key(root, env)
        for n in range(1, runs + 1):
            result = one_run(n, root, env, key, workers=workers, threads=threads, before=before)
            if report is not None:
                report(result)
            results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--before", type=int, default=200, help="answers before SIGTERM")
    parser.add_argument("--model-dir", type=Path, default=Path("models"))
    parser.add_argument("--keep", type=Path, help="keep every run's server logs here")
    args = parser.parse_args()
    if not (args.model_dir / "v1" / "manifest.json").exists():
        sys.exit(f"no trained models in {args.model_dir}: run `housing-api train` first")
    results = run_many(
        args.model_dir.resolve(),
        args.runs,
        workers=args.workers,
        threads=args.threads,
        before=args.before,
        keep=args.keep.resolve() if args.keep else None,
        report=lambda result: print(result.line(), flush=True),
    )
    passed = sum(r.passed for r in results)
    lost = sum(len(r.lost) + len(r.mismatched) for r in results)
    print(
        f"\nSIGTERM under load, {args.workers} worker(s), {args.threads} keep-alive clients: "
        f"{passed}/{len(results)} runs lost nothing ({lost} requests lost in all)"
    )
    sys.exit(0 if passed == len(results) else 1)


if __name__ == "__main__":
    main()
