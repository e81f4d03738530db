"""``make bench``: our guarded /v1/predict against its baselines, side by side, with wrk.

Run: ``python -m bench.run [--duration S] [--repeats N] [--model-dir DIR] [--quick]``.

For each worker count (1, then 2) the script starts, on free loopback ports:

* (a) ``bare``: FastAPI validating the same body, answering a constant (the ceiling);
* (b) ``tutorial``: ``async def`` + scikit-learn ``predict`` on a list, no guards;
* ``ours``: ``housing-api serve`` (in-memory limiter): (c) with a JWT, (d) with an API
  key, (f) /v1/predict/batch with 1, 100 and 1000 rows;
* ``ours_redis_log``: the same with ``REDIS_URL`` (a redis-server started here) and the
  prediction log on (e); ``ours_redis``: Redis, prediction log off (r);
* (u) ``unauthenticated``: our app with the security dependency replaced (issue 8);
* (n) ``limiter_off``: our app, JWT, with rate limiting disabled (issue 6).

The prediction log is off everywhere but (e), so (e)/(c) prices Redis and the log
together (issue 9), (r)/(n) the Redis limiter alone (issue 6) and (e)/(r) the log.

Every scenario runs at every concurrency in each repeat, in an order rotated per
repeat, so the figures compared were measured minutes apart at most; ratios are
medians of per-repeat ratios. Each server's CPU time per request and each worker's
peak RSS (VmHWM) are read from /proc. Then: Redis commands per guarded request
(MONITOR over sequential requests), in-process ``LoadedModel.predict`` and scikit-learn
``predict`` rows/s, the cost of each part of a request on its own (``bench.components``),
and py-spy summaries (and flamegraphs) of /v1/predict and of a 1000-row batch, with a
token (``bench.profiling``). Results go to
``bench/results/<timestamp>.json`` (written after each phase too, so a failure keeps
what was measured) and ``docs/benchmarks.md`` is generated from them.

The code under test is copied at the start and every server, CLI call and in-process
measurement imports the copy, so edits to the working tree during a run cannot mix
two versions in one set of ratios. Total time: about 12 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from pydantic import BaseModel

from bench import components, profiling, progress, report, servers
from bench.predict_path import per_call_us
from deploy.processes import HOST, ServerFailed

ROOT = Path(__file__).resolve().parent.parent
WRK_SCRIPT = ROOT / "bench" / "wrk" / "post_json.lua"
RESULTS = ROOT / "bench" / "results"
BATCH_ROWS = (1, 100, 1000)
BATCH_CONCURRENCY = 8
SINGLE_BODY = {"lotsize": 5850.0, "bedrooms": 3, "bathrms": 1, "stories": 2, "garagepl": 1}
# Limits are checked on every request but never reached; shedding never triggers, so
# every answer is a 200 (checked: a run with any other status is flagged).
SERVER_SETTINGS = {
    "APP_ENV": "development",
    "RATE_LIMIT_PREDICT": "100000000/minute",
    "MAX_INFLIGHT_PREDICTIONS": "10000",
    "ACCESS_TOKEN_TTL_SECONDS": "7200",
}


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    server: str
    credential: str | None  # "token", "key" or None


SCENARIOS = (
    Scenario("a", "bare FastAPI, same body validation, constant answer (ceiling)", "bare", None),
    Scenario("b", "tutorial: async def + sklearn predict(list), no guards", "tutorial", None),
    Scenario("c", "ours, JWT (in-memory limiter)", "ours", "token"),
    Scenario("d", "ours, API key (in-memory limiter)", "ours", "key"),
    Scenario("e", "ours, JWT, Redis limiter, prediction log on", "ours_redis_log", "token"),
    Scenario("r", "ours, JWT, Redis limiter", "ours_redis", "token"),
    Scenario(
        "u", "ours, authentication replaced by a fixed caller (twin)", "unauthenticated", None
    ),
    Scenario("n", "ours, JWT, rate limiting off (twin)", "limiter_off", "token"),
)
FACTORIES = {
    "bare": "bench.baselines.bare:build",
    "tutorial": "bench.baselines.tutorial:build",
    "unauthenticated": "bench.baselines.unauthenticated:build",
    "limiter_off": "bench.baselines.limiter_off:build",
}


def log(message: str) -> None:
    """A line above the progress bar (stderr); the summary goes to stdout."""
    progress.CONSOLE.print(f"[bench {time.strftime('%H:%M:%S')}] {message}", markup=False)


# --- environment and credentials --------------------------------------------------


PRODUCT_PACKAGES = ("app", "auth", "cli", "db", "migrations", "ml", "monitoring")
SOURCE_PACKAGES = (*PRODUCT_PACKAGES, "bench", "deploy", "data")


def snapshot_source(target: Path) -> Path:
    """Freeze the code under test: copy it and put the copy first on every import path.

    Other people edit the working tree while a 15-minute run goes on; every server,
    CLI call and in-process measurement of one run must see the same code.
    """
    for name in SOURCE_PACKAGES:
        shutil.copytree(
            ROOT / name,
            target / name,
            ignore=shutil.ignore_patterns("__pycache__", "results", "*.pyc"),
        )
    sys.path.insert(0, str(target))
    for module in [m for m in sys.modules if m.split(".")[0] in PRODUCT_PACKAGES]:
        del sys.modules[module]  # anything imported before the copy existed
    return target


def base_env(work: Path, model_dir: Path, source: Path) -> dict[str, str]:
    """The caller's environment minus any app setting, plus the benchmark's settings."""
    from app.settings import Settings

    ours = {name.upper() for name in Settings.model_fields} | {"GUNICORN_CMD_ARGS"}
    env = {k: v for k, v in os.environ.items() if k.upper() not in ours}
    pythonpath = os.pathsep.join(p for p in (str(source), env.get("PYTHONPATH")) if p)
    env.update(SERVER_SETTINGS)
    env.update(
        # Every server has its own VAR_DIR (``serve`` keeps per-host state there, e.g.
        # Prometheus' multiprocess files), so the secrets it would generate into var/
        # are given explicitly: one signing key and one pepper for the whole run.
        JWT_SECRET_KEY=secrets.token_urlsafe(48),
        API_KEY_PEPPER=secrets.token_urlsafe(48),
        VAR_DIR=str(work / "var"),
        DATABASE_URL=f"sqlite:///{work / 'var' / 'housing.db'}",
        MODEL_DIR=str(model_dir),
        DATA_PATH=str(source / "data" / "housing.csv"),
        PYTHONPATH=pythonpath,
    )
    return env


def cli(env: Mapping[str, str], cwd: Path, *args: str) -> str:
    result = subprocess.run(
        [str(servers.BIN / "housing-api"), *args],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        raise ServerFailed(f"housing-api {args[0]} failed:\n{result.stderr}")
    return result.stdout


@dataclass
class Credentials:
    client_id: str
    client_secret: str
    api_key: str


def create_credentials(env: Mapping[str, str], cwd: Path) -> Credentials:
    client = json.loads(
        cli(env, cwd, "clients", "create", "bench", "--scopes", "predict", "--json")
    )
    key = json.loads(
        cli(env, cwd, "keys", "create", "--owner", "bench", "--scopes", "predict", "--json")
    )
    return Credentials(client["client_id"], client["client_secret"], key["api_key"])


def fetch_token(base_url: str, creds: Credentials) -> str:
    answer = httpx.post(
        base_url + "/token",
        data={"grant_type": "client_credentials", "scope": "predict"},
        auth=(creds.client_id, creds.client_secret),
        timeout=10.0,
    )
    answer.raise_for_status()
    token: str = answer.json()["access_token"]
    return token


def header_for(credential: str | None, token: str, creds: Credentials) -> tuple[str, str]:
    if credential == "token":
        return "Authorization", f"Bearer {token}"
    if credential == "key":
        return "X-API-Key", creds.api_key
    return "", ""


# --- bodies ------------------------------------------------------------------------


def batch_rows(n: int, data_path: Path) -> list[dict[str, Any]]:
    """``n`` real houses from the training data, typed as the strict schema wants."""
    from ml.dataset import load_dataset
    from ml.features import FEATURES

    data = load_dataset(data_path, "v1")
    kinds = [f.kind for f in FEATURES["v1"]]
    rows = []
    for i in range(n):
        values = data.X[i % data.rows]
        rows.append(
            {
                name: (float(v) if kind == "float" else int(v))
                for name, kind, v in zip(data.feature_names, kinds, values, strict=True)
            }
        )
    return rows


def write_bodies(work: Path, data_path: Path) -> dict[str, Path]:
    bodies = work / "bodies"
    bodies.mkdir()
    paths = {"single": bodies / "single.json"}
    paths["single"].write_text(json.dumps(SINGLE_BODY))
    for n in BATCH_ROWS:
        paths[f"batch{n}"] = bodies / f"batch{n}.json"
        paths[f"batch{n}"].write_text(json.dumps({"instances": batch_rows(n, data_path)}))
    return paths


# --- wrk ---------------------------------------------------------------------------

_WRK_JSON = re.compile(r"^BENCH_JSON (\{.*\})$", re.MULTILINE)


def wrk(
    url: str,
    body: Path,
    header: tuple[str, str],
    concurrency: int,
    duration: float,
    threads: int = 2,
) -> dict[str, Any]:
    env = dict(
        os.environ,
        BENCH_BODY_FILE=str(body),
        BENCH_HEADER_NAME=header[0],
        BENCH_HEADER_VALUE=header[1],
    )
    argv = [
        shutil.which("wrk") or "/usr/bin/wrk",
        f"-t{min(threads, concurrency)}",
        f"-c{concurrency}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(WRK_SCRIPT),
        url,
    ]
    result = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=duration + 60, check=False
    )
    match = _WRK_JSON.search(result.stdout)
    if result.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    raw = json.loads(match.group(1))
    seconds = raw["duration_us"] / 1e6
    errors = raw["errors"]
    return {
        "requests": raw["requests"],
        "seconds": seconds,
        "rps": raw["requests"] / seconds,
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "non_2xx": errors["status"],
        "socket_errors": errors["connect"] + errors["read"] + errors["write"] + errors["timeout"],
    }


# --- servers -----------------------------------------------------------------------


def build_servers(
    work: Path, env: Mapping[str, str], workers: int, redis_url: str
) -> dict[str, servers.Process]:
    root = work / f"w{workers}"

    def env_for(name: str, **extra: str) -> dict[str, str]:
        (root / name / "var").mkdir(parents=True)
        return {
            **env,
            "VAR_DIR": str(root / name / "var"),
            "PREDICTION_LOG_ENABLED": "false",
            **extra,
        }

    made = {
        "ours": servers.ours("ours", root / "ours", env_for("ours"), workers),
        "ours_redis": servers.ours(
            "ours_redis", root / "ours_redis", env_for("ours_redis", REDIS_URL=redis_url), workers
        ),
        "ours_redis_log": servers.ours(
            "ours_redis_log",
            root / "ours_redis_log",
            env_for("ours_redis_log", REDIS_URL=redis_url, PREDICTION_LOG_ENABLED="true"),
            workers,
        ),
    }
    for name in ("bare", "tutorial", "unauthenticated", "limiter_off"):
        made[name] = servers.factory(name, FACTORIES[name], root / name, env_for(name), workers)
    return made


@contextlib.contextmanager
def running(processes: Mapping[str, servers.Process]) -> Iterator[None]:
    try:
        for process in processes.values():
            process.start()
        for process in processes.values():
            process.wait_ready()
        yield
    finally:
        for process in processes.values():
            process.stop()


def sanity_check(
    scenario: Scenario, url: str, body: Path, header: tuple[str, str]
) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if header[0]:
        headers[header[0]] = header[1]
    answer = httpx.post(url, content=body.read_bytes(), headers=headers, timeout=10.0)
    if answer.status_code != 200:
        raise RuntimeError(f"{scenario.key} {url}: {answer.status_code} {answer.text[:300]}")
    return {
        "status": answer.status_code,
        "body": answer.json(),
        "ratelimit_header": "RateLimit" in answer.headers,
    }


# --- in-process model --------------------------------------------------------------


def _loads_then_validate(schema: type[BaseModel], raw: bytes) -> BaseModel:
    return schema.model_validate(json.loads(raw))


def _matrix(houses: Sequence[object], names: Sequence[str]) -> np.ndarray:
    """The float64 matrix as ``app.routes.predict`` builds it from validated houses."""
    return np.array([[float(getattr(h, name)) for name in names] for h in houses], dtype=np.float64)


def _serialize(
    schema: type[BaseModel], prices: list[float], intervals: list[dict[str, float]], **fields: str
) -> str:
    return schema(predictions=prices, intervals=intervals, **fields).model_dump_json()


def in_process(model_dir: Path, bodies: Mapping[str, Path], repeats: int) -> list[dict[str, Any]]:
    """Rows/s of ``LoadedModel.predict`` on the batches' rows, and of each handler stage."""
    from app.schemas import BatchPrediction, BatchV1
    from ml.artifacts import load_verified

    model = load_verified(model_dir, "v1")
    names = model.feature_names
    out = []
    for n in BATCH_ROWS:
        raw = bodies[f"batch{n}"].read_bytes()
        batch = BatchV1.model_validate_json(raw)
        X = _matrix(batch.instances, names)
        prices, low, high = (a.tolist() for a in model.predict_interval(X))
        level = model.interval.level
        intervals = [
            {"low": lo, "high": hi, "level": level} for lo, hi in zip(low, high, strict=True)
        ]
        stages: dict[str, Callable[[], object]] = {
            "loaded_model_predict": partial(model.predict, X),
            "estimator_predict": partial(model.estimator.predict, X),
            "validate_json": partial(BatchV1.model_validate_json, raw),
            # What FastAPI does with a body: json.loads, then validate the Python objects.
            "json_loads_then_validate": partial(_loads_then_validate, BatchV1, raw),
            "build_matrix": partial(_matrix, batch.instances, names),
            "serialize": partial(
                _serialize,
                BatchPrediction,
                prices,
                intervals,
                model_version="v1",
                model_sha256=model.sha256,
            ),
        }
        row: dict[str, Any] = {"rows": n, "predict_path": model.predict_path}
        for name, action in stages.items():
            us = per_call_us(action, repeats)
            row[f"{name}_us"] = us
            row[f"{name}_rows_per_s"] = n / us * 1e6
        out.append(row)
    return out


# --- Redis -------------------------------------------------------------------------


def redis_commands(
    redis_port: int, url: str, body: Path, header: tuple[str, str], n: int = 20
) -> dict[str, Any]:
    """Commands each guarded request sends to Redis, seen by MONITOR over ``n`` requests.

    MONITOR shows commands, not round trips: the app pipelines the moving-window hit and
    its read (``app.limits.PipelinedMovingWindow``), two commands in one round trip, and
    MONITOR cannot tell pipelined commands apart. The benchmark's own commands (its
    control connection's INFO) are left out.
    """
    import redis as redis_client

    seen: list[dict[str, Any]] = []
    started = threading.Event()

    def watch() -> None:
        conn = redis_client.Redis(host=HOST, port=redis_port, socket_timeout=30)
        with conn.monitor() as monitor:  # type: ignore[no-untyped-call]
            started.set()
            for command in monitor.listen():
                seen.append(command)
                if "bench-monitor-end" in command.get("command", ""):
                    return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started.wait(10)
    time.sleep(0.3)
    control = redis_client.Redis(host=HOST, port=redis_port)
    ours = str(control.client_info().get("addr", ""))
    before = control.info("commandstats")
    control.echo("bench-monitor-start")
    headers = {"Content-Type": "application/json", header[0]: header[1]}
    with httpx.Client(timeout=10.0) as client:
        for _ in range(n):
            client.post(url, content=body.read_bytes(), headers=headers).raise_for_status()
    after = control.info("commandstats")
    control.echo("bench-monitor-end")
    watcher.join(10)
    window: list[dict[str, Any]] = []
    for command in seen:
        text = command.get("command", "")
        if "bench-monitor-start" in text:
            window = []
        elif "bench-monitor-end" in text:
            break
        else:
            window.append(command)
    client_side = Counter(
        c["command"].split()[0].upper()
        for c in window
        if c.get("client_type") != "lua"
        and f"{c.get('client_address')}:{c.get('client_port')}" != ours
    )
    in_scripts = Counter(
        c["command"].split()[0].upper() for c in window if c.get("client_type") == "lua"
    )
    stats = {}
    for name, values in after.items():
        calls = values["calls"] - before.get(name, {}).get("calls", 0)
        usec = values["usec"] - before.get(name, {}).get("usec", 0)
        if calls > 0 and name != "cmdstat_info":
            stats[name.removeprefix("cmdstat_")] = {"calls": calls, "usec": usec}
    return {
        "requests": n,
        "commands_per_request": sum(client_side.values()) / n,
        "client_commands": dict(client_side),
        "commands_inside_scripts": dict(in_scripts),
        "commandstats_delta": stats,
        "sample": [c["command"][:160] for c in window[:8]],
    }


def prediction_log_rows(env: Mapping[str, str]) -> int | None:
    """Rows in the prediction log table so far (None if the app has no such table)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(env["DATABASE_URL"])
    try:
        with engine.connect() as conn:
            tables = sqlalchemy.inspect(conn).get_table_names()
            name = next((t for t in tables if t.startswith("prediction")), None)
            if name is None:
                return None
            count = conn.execute(sqlalchemy.text(f'SELECT count(*) FROM "{name}"')).scalar()  # noqa: S608 - a table name we just listed
            return int(count or 0)
    finally:
        engine.dispose()


# --- profile -----------------------------------------------------------------------


def profile(
    work: Path,
    env: Mapping[str, str],
    creds: Credentials,
    body: Path,
    seconds: int,
    name: str,
    flamegraph: Path,
    path: str = "/v1/predict",
    concurrency: int = 32,
) -> dict[str, Any]:
    """Our app as (c) runs it, sampled by py-spy while wrk drives ``path`` with a JWT.

    Two windows of ``seconds`` under the same load, each after the other: first py-spy
    ``--gil`` (the shares) with a second py-spy writing the same view as a flamegraph
    SVG to ``flamegraph``, then py-spy on every thread (``bench.profiling`` says why
    both). wrk runs a second longer than py-spy so that every sample is under load.
    A py-spy failure is recorded in the view instead of stopping the run.
    """
    root = work / f"profile-{name}"
    (root / "var").mkdir(parents=True)
    process = servers.ours(
        f"profile-{name}",
        root,
        {**env, "VAR_DIR": str(root / "var"), "PREDICTION_LOG_ENABLED": "false"},
        1,
    )
    out: dict[str, Any] = {
        "tool": profiling.version(),
        "path": path,
        "concurrency": concurrency,
        "rate_hz": profiling.RATE,
        "seconds": seconds,
        "views": {},
    }
    with running({process.name: process}):
        token = fetch_token(process.base_url, creds)
        header = header_for("token", token, creds)
        url = process.base_url + path
        wrk(url, body, header, concurrency, 1)  # warm-up
        for view, gil in (("gil", True), ("all_threads", False)):
            raw = root / f"{view}.txt"
            recordings = [profiling.record(process.pid, raw, seconds, gil=gil)]
            svg = root / f"{view}.svg"
            if gil:
                recordings.append(
                    profiling.record(process.pid, svg, seconds, gil=True, fmt="flamegraph")
                )
            cpu0 = process.cpu_seconds()
            measured = wrk(url, body, header, concurrency, seconds + 1)
            cpu_us = (process.cpu_seconds() - cpu0) / max(1, measured["requests"]) * 1e6
            spy = profiling.finish(recordings[0])
            result: dict[str, Any] = {
                "gil_only": gil,
                "py_spy": spy,
                "wrk": measured,
                "server_cpu_us_per_request": cpu_us,
            }
            if gil:
                drawn = profiling.finish(recordings[1])
                if "error" in drawn:
                    result["flamegraph_error"] = drawn["error"]
                else:
                    flamegraph.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(svg, flamegraph)
                    out["flamegraph"] = str(flamegraph)
            if "error" not in spy:
                if gil and "samples" in spy:
                    # Share of the sampling ticks in which some thread held the GIL (ticks
                    # py-spy could not read are left out): wall time, not CPU time.
                    ticks = max(1, profiling.RATE * seconds - spy["errors"])
                    result["gil_held_fraction"] = min(1.0, spy["samples"] / ticks)
                    result["gil_held_us_per_request"] = (
                        result["gil_held_fraction"] / measured["rps"] * 1e6
                    )
                # The GIL view splits the server's CPU per request; the other over-counts.
                result |= profiling.summarize(
                    raw, drop_idle=not gil, us_per_request=cpu_us if gil else None
                )
                if not gil:  # threads with a Python stack at a tick, idle ones dropped
                    result["busy_threads"] = result["kept_samples"] / (profiling.RATE * seconds)
            out["views"][view] = result
            log(
                f"profile {path} {view}: "
                + (spy.get("error", "")[:200] or f"{result['kept_samples']} samples kept")
            )
    return out


# --- the run -----------------------------------------------------------------------


def rotated(items: tuple[Scenario, ...], by: int) -> list[Scenario]:
    k = by % len(items)
    return list(items[k:] + items[:k])


def phase(
    workers: int,
    args: argparse.Namespace,
    work: Path,
    env: Mapping[str, str],
    creds: Credentials,
    bodies: Mapping[str, Path],
    redis: servers.Process,
) -> dict[str, Any]:
    processes = build_servers(work, env, workers, f"redis://{HOST}:{redis.port}/0")
    runs: list[dict[str, Any]] = []
    batches: list[dict[str, Any]] = []
    out: dict[str, Any] = {"workers": workers, "runs": runs, "batches": batches}
    log(f"workers={workers}: starting {len(processes)} servers")
    with running(processes):
        token = fetch_token(processes["ours"].base_url, creds)
        targets = {
            s.key: (processes[s.server], header_for(s.credential, token, creds)) for s in SCENARIOS
        }
        out["sanity"] = {}
        for s in SCENARIOS:
            process, header = targets[s.key]
            url = process.base_url + "/v1/predict"
            out["sanity"][s.key] = sanity_check(s, url, bodies["single"], header)
            wrk(url, bodies["single"], header, 32, args.warmup)
        for repeat in range(args.repeats):
            for concurrency in args.concurrency:
                for s in rotated(SCENARIOS, repeat):
                    process, header = targets[s.key]
                    cpu0, redis0 = process.cpu_seconds(), redis.cpu_seconds()
                    result = wrk(
                        process.base_url + "/v1/predict",
                        bodies["single"],
                        header,
                        concurrency,
                        args.duration,
                    )
                    server_cpu = process.cpu_seconds() - cpu0
                    result.update(
                        scenario=s.key,
                        concurrency=concurrency,
                        repeat=repeat,
                        server_cpu_s=server_cpu,
                        server_cpu_us_per_request=server_cpu / max(1, result["requests"]) * 1e6,
                    )
                    if s.key in ("e", "r"):
                        redis_cpu = redis.cpu_seconds() - redis0
                        result["redis_cpu_s"] = redis_cpu
                        result["redis_cpu_us_per_request"] = (
                            redis_cpu / max(1, result["requests"]) * 1e6
                        )
                    runs.append(result)
                    log(
                        f"w{workers} r{repeat} c{concurrency:<3} {s.key} "
                        f"{result['rps']:8.0f} req/s  p50 {result['p50_ms']:7.2f} ms  "
                        f"p99 {result['p99_ms']:7.2f} ms  "
                        f"cpu {result['server_cpu_us_per_request']:6.0f} µs/req"
                        + (f"  non-2xx {result['non_2xx']}" if result["non_2xx"] else "")
                    )
        ours = processes["ours"]
        header = header_for("token", token, creds)
        for repeat in range(args.repeats):
            for n in BATCH_ROWS:
                cpu0 = ours.cpu_seconds()
                result = wrk(
                    ours.base_url + "/v1/predict/batch",
                    bodies[f"batch{n}"],
                    header,
                    BATCH_CONCURRENCY,
                    args.duration,
                )
                result.update(
                    rows=n,
                    repeat=repeat,
                    concurrency=BATCH_CONCURRENCY,
                    rows_per_s=result["rps"] * n,
                    server_cpu_us_per_request=(ours.cpu_seconds() - cpu0)
                    / max(1, result["requests"])
                    * 1e6,
                )
                batches.append(result)
                log(
                    f"w{workers} r{repeat} batch {n:<4} {result['rows_per_s']:10.0f} rows/s  "
                    f"p99 {result['p99_ms']:7.2f} ms"
                )
        out["prediction_log_rows"] = prediction_log_rows(env)
        if workers == 1:
            e_process, e_header = targets["e"]
            out["redis"] = redis_commands(
                redis.port, e_process.base_url + "/v1/predict", bodies["single"], e_header
            )
            log(f"redis commands per request: {out['redis']['commands_per_request']:.2f}")
        out["peak_rss_mb"] = {name: p.peak_rss_mb() for name, p in processes.items()}
    return out


def environment() -> dict[str, Any]:
    from importlib.metadata import version

    def first_line(argv: list[str]) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
            return (done.stdout or done.stderr).splitlines()[0].strip()
        return "unknown"

    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    packages = [
        "fastapi",
        "starlette",
        "uvicorn",
        "uvloop",
        "httptools",
        "gunicorn",
        "uvicorn-worker",
        "pydantic",
        "pydantic-core",
        "slowapi",
        "limits",
        "redis",
        "python-jose",
        "sqlalchemy",
        "numpy",
        "scikit-learn",
        "orjson",
    ]
    versions = {}
    for name in packages:
        with contextlib.suppress(Exception):
            versions[name] = version(name)

    def git(*args: str) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
            )
            return done.stdout.strip()
        return ""

    from app.settings import Settings

    return {
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "git_dirty_files": len(git("status", "--porcelain", "--", *PRODUCT_PACKAGES).splitlines()),
        "prediction_log_setting": "prediction_log_enabled" in Settings.model_fields,
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": first_line(["wrk", "--version"]),
        "redis_server": first_line([str(servers.redis_binary()), "--version"]),
        "packages": versions,
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
    }


def cpu_steal() -> tuple[int, int]:
    """(steal, total) jiffies from /proc/stat, to report how noisy the host was."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return fields[7] if len(fields) > 7 else 0, sum(fields)


def _run_phases(
    args: argparse.Namespace,
    work: Path,
    source: Path,
    redis: servers.Process,
    results: dict[str, Any],
    path: Path,
    next_phase: Callable[[str], None],
) -> None:
    """Train (unless given models), then every measured phase, each announced."""
    next_phase("setup: models, credentials, Redis")
    model_dir = args.model_dir
    env = base_env(work, model_dir or work / "models", source)
    (work / "var").mkdir()
    if model_dir is None:
        log("training v1 and v2 into a temporary MODEL_DIR (about 30 s)")
        cli(env, work, "train")
    log("creating a client and an API key with the CLI")
    creds = create_credentials(env, work)
    bodies = write_bodies(work, Path(env["DATA_PATH"]))
    (work / "redis").mkdir()
    redis.start()
    servers.wait_redis(redis)
    results["phases"] = []
    for workers in args.workers:
        next_phase(f"load test, {workers} worker(s) per server")
        try:
            results["phases"].append(phase(workers, args, work, env, creds, bodies, redis))
        except (ServerFailed, RuntimeError, httpx.HTTPError) as exc:
            log(f"workers={workers} failed: {str(exc)[-2000:]}")
            results.setdefault("failures", []).append(
                {"workers": workers, "error": str(exc)[-4000:]}
            )
        path.write_text(json.dumps(results, indent=1) + "\n")  # a checkpoint
    next_phase("in process: predict, and each part of a request alone")
    log("in-process LoadedModel.predict, and what each part of a request costs alone")
    results["in_process"] = in_process(Path(env["MODEL_DIR"]), bodies, max(5, args.repeats))
    results["components"] = components.measure(Path(env["MODEL_DIR"]), redis.port)
    for key, name, body, route, concurrency in (
        ("profile", "predict", bodies["single"], "/v1/predict", 32),
        ("profile_batch", "batch", bodies["batch1000"], "/v1/predict/batch", BATCH_CONCURRENCY),
    ):
        next_phase(f"profile {route} (py-spy)")
        log(f"profiling {route} with a token under py-spy")
        try:
            results[key] = profile(
                work,
                env,
                creds,
                body,
                args.profile_seconds,
                name,
                path.with_name(f"{path.stem}-profile-{name}.svg"),
                path=route,
                concurrency=concurrency,
            )
        except (
            ServerFailed,
            RuntimeError,
            httpx.HTTPError,
            OSError,
            subprocess.SubprocessError,
        ) as exc:
            log(f"profile of {route} failed: {str(exc)[-2000:]}")
            results[key] = {"path": route, "error": f"{type(exc).__name__}: {exc}"[-4000:]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of warm-up per scenario")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (median; >= 3)")
    parser.add_argument(
        "--concurrency", type=lambda s: [int(c) for c in s.split(",")], default=[8, 32, 128]
    )
    parser.add_argument("--workers", type=lambda s: [int(w) for w in s.split(",")], default=[1, 2])
    parser.add_argument("--profile-seconds", type=int, default=8)
    parser.add_argument("--model-dir", type=Path, help="trained models (default: train now)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    parser.add_argument("--quick", action="store_true", help="1 s runs, 1 repeat: a smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.repeats, args.warmup, args.profile_seconds = 1, 1, 1, 2
        args.no_docs = True
    elif args.repeats < 3:
        parser.error("--repeats must be at least 3 (use --quick for a smoke test)")

    started = datetime.now(UTC)
    steal0 = cpu_steal()
    clock0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="housing-bench-"))
    source = snapshot_source(work / "src")
    redis = servers.redis(work / "redis")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    results: dict[str, Any] = {
        "started_at": started.isoformat(timespec="seconds"),
        "command": "make bench  # " + " ".join([".venv/bin/python -m bench.run", *sys.argv[1:]]),
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "repeats": args.repeats,
            "concurrency": args.concurrency,
            "workers": args.workers,
            "wrk_threads": 2,
            "batch_concurrency": BATCH_CONCURRENCY,
            "server_env": SERVER_SETTINGS,
            "scenarios": {s.key: s.label for s in SCENARIOS},
        },
        "environment": environment(),
    }
    # Phases: setup, one per worker count, in-process and components, two profiles.
    total = 1 + len(args.workers) + 1 + 2
    try:
        with progress.phases(total) as next_phase:
            _run_phases(args, work, source, redis, results, path, next_phase)
    finally:
        redis.stop()
        shutil.rmtree(work, ignore_errors=True)
    steal1 = cpu_steal()
    results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["elapsed_s"] = time.monotonic() - clock0
    total = max(1, steal1[1] - steal0[1])
    results["environment"]["cpu_steal_percent"] = 100 * (steal1[0] - steal0[0]) / total
    results["summary"] = report.summarize(results)
    path.write_text(json.dumps(results, indent=1) + "\n")
    log(f"results: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    print(report.console_summary(results["summary"]))
    if not args.no_docs:
        report.write_docs(results, path, args.docs)
        log(f"wrote {args.docs / 'benchmarks.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
