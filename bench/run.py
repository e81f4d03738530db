"""``make bench``: our guarded /v1/predict against its baselines, side by side, with wrk.

Run: ``python -m bench.run [--duration S] [--repeats N] [--model-dir DIR] [--quick]``.

For each worker count (1, then 2) the script starts, on free loopback ports:

* (a) ``bare``: FastAPI validating the same body, answering a constant (the ceiling);
* (m) ``bare_model``: (a) plus the model we serve and our response model, no guards;
* (b) ``tutorial``: ``async def`` + scikit-learn ``predict`` on a list, no guards;
* ``ours``: ``housing-api serve``, quota in memory: (c) with a JWT, (d) with an API key,
  (f) /v1/predict/batch with 1, 100 and 1000 rows, and the refusals: no credentials
  (401), a forged token (401), a caller over its plan's quota (429), a declared body
  over MAX_BODY_BYTES (413);
* ``ours_redis``: the same with ``REDIS_URL`` (a redis-server started here), the quota
  in Redis (r); ``ours_redis_log``: the same with the prediction log on (e).

So (c)/(a) prices everything we add to a bare endpoint, (c)/(m) the guards alone,
(r)/(c) the quota in Redis against the quota in memory, (e)/(r) the prediction log,
and each refusal against (a) what refusing costs against answering.

Every scenario runs at every concurrency in each repeat (the refusals at the headline
concurrency only), in an order rotated per repeat, so the figures compared were
measured minutes apart at most; ratios are medians of per-repeat ratios. wrk's Lua
script counts the answers by status: a scenario whose answers are not all its expected
status is marked failed (and the run exits non-zero). Each server's CPU time per
request and each worker's peak RSS (VmHWM) are read from /proc, Redis's CPU from its
``INFO cpu`` and its commands from ``INFO commandstats``. Then: the commands each
request sends to Redis (MONITOR over sequential requests), in-process
``LoadedModel.predict`` and scikit-learn ``predict`` rows/s, the cost of each part of a
request on its own (``bench.components``), and py-spy summaries (and flamegraphs) of
/v1/predict and of a 1000-row batch with a token, and of the Redis path and the refusals
(``bench.profiling``). Results go to ``bench/results/<timestamp>.json`` (written after
each phase too, so a failure keeps what was measured) and ``docs/benchmarks.md`` is
generated from them, beside the previous results file as "before".

The code under test is copied at the start and every server, CLI call and in-process
measurement imports the copy, so edits to the working tree during a run cannot mix
two versions in one set of ratios. Total time: about 14 minutes on 2 cores.
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
HEADLINE_CONCURRENCY = 32
SINGLE_BODY = {"lotsize": 5850.0, "bedrooms": 3, "bathrms": 1, "stories": 2, "garagepl": 1}
MIB = 1024 * 1024
# Limits are checked on every request but never reached by the scenarios that expect a
# 200, and shedding never triggers (every answer is checked against its expected
# status). RATE_LIMIT_AUTH_FAILURES is per second so that a flood of forged tokens from
# one address keeps being answered 401 (under the default 30/minute it is answered 429,
# by the throttle, from the 31st failure on) while the throttle's moving window holds
# only a second of failures. The "tiny" plan is the over-quota caller's.
SERVER_SETTINGS = {
    "APP_ENV": "development",
    "RATE_LIMIT_PREDICT": "100000000/minute",
    "RATE_LIMIT_AUTH_FAILURES": "100000000/second",
    "RATE_LIMIT_PLANS": json.dumps({"tiny": "1/hour"}),
    "MAX_INFLIGHT_PREDICTIONS": "10000",
    "MAX_CONCURRENT_BODY_READS": "10000",
    "MAX_BODY_BYTES": str(MIB),
    "ACCESS_TOKEN_TTL_SECONDS": "7200",
}


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    server: str
    # "token", "key", "tiny_key" (a key of the exhausted "tiny" plan), "forged" (the
    # token with its signature altered) or None
    credential: str | None
    expect: int = 200
    declared_length: int | None = None  # a Content-Length over the body's own
    headline_only: bool = False  # at HEADLINE_CONCURRENCY only


SCENARIOS = (
    Scenario("a", "bare FastAPI, same body validation, constant answer (ceiling)", "bare", None),
    Scenario(
        "m",
        "bare + the same model: (a) + LoadedModel.predict + the response model, no guards",
        "bare_model",
        None,
    ),
    Scenario("b", "tutorial: async def + sklearn predict(list), no guards", "tutorial", None),
    Scenario("c", "ours, JWT (quota in memory)", "ours", "token"),
    Scenario("d", "ours, API key (quota in memory)", "ours", "key"),
    Scenario("r", "ours, JWT, quota in Redis", "ours_redis", "token"),
    Scenario("e", "ours, JWT, quota in Redis, prediction log on", "ours_redis_log", "token"),
    Scenario("n401", "ours, no credentials: 401", "ours", None, 401, headline_only=True),
    Scenario(
        "f401",
        "ours, a forged token (a real one, its signature altered): 401",
        "ours",
        "forged",
        401,
        headline_only=True,
    ),
    Scenario(
        "q429",
        "ours, an API key of a plan of 1/hour, exhausted before the run: 429",
        "ours",
        "tiny_key",
        429,
        headline_only=True,
    ),
    Scenario(
        "s413",
        "ours, Content-Length: MAX_BODY_BYTES + 1 declared, a small body sent, no credentials: 413",
        "ours",
        None,
        413,
        declared_length=MIB + 1,
        headline_only=True,
    ),
)
FACTORIES = {
    "bare": "bench.baselines.bare:build",
    "bare_model": "bench.baselines.bare_model:build",
    "tutorial": "bench.baselines.tutorial:build",
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
    tiny_key: str  # of the "tiny" plan (1/hour): exhausted before its scenario runs


def create_credentials(env: Mapping[str, str], cwd: Path) -> Credentials:
    client = json.loads(
        cli(env, cwd, "clients", "create", "bench", "--scopes", "predict", "--json")
    )
    key = json.loads(
        cli(env, cwd, "keys", "create", "--owner", "bench", "--scopes", "predict", "--json")
    )
    tiny = json.loads(
        cli(
            env,
            cwd,
            "keys",
            "create",
            "--owner",
            "bench-tiny",
            "--scopes",
            "predict",
            "--plan",
            "tiny",
            "--json",
        )
    )
    return Credentials(
        client["client_id"], client["client_secret"], key["api_key"], tiny["api_key"]
    )


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


def forged(token: str) -> str:
    """``token`` with its signature altered: well formed, a known key id, checked in full
    (an HMAC) and refused on every request, never cached."""
    head, _, signature = token.rpartition(".")
    flipped = "A" if signature[0] != "A" else "B"
    return f"{head}.{flipped}{signature[1:]}"


def header_for(credential: str | None, token: str, creds: Credentials) -> tuple[str, str]:
    if credential == "token":
        return "Authorization", f"Bearer {token}"
    if credential == "forged":
        return "Authorization", f"Bearer {forged(token)}"
    if credential == "key":
        return "X-API-Key", creds.api_key
    if credential == "tiny_key":
        return "X-API-Key", creds.tiny_key
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
    *,
    expect: int = 200,
    declared_length: int | None = None,
) -> dict[str, Any]:
    """One wrk run; ``unexpected`` counts the answers whose status is not ``expect``
    and the socket errors (a scenario with any is marked failed)."""
    env = dict(
        os.environ,
        BENCH_BODY_FILE=str(body),
        BENCH_HEADER_NAME=header[0],
        BENCH_HEADER_VALUE=header[1],
        BENCH_DECLARED_LENGTH="" if declared_length is None else str(declared_length),
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
    return parse_wrk(json.loads(match.group(1)), expect)


def parse_wrk(raw: Mapping[str, Any], expect: int) -> dict[str, Any]:
    """The figures of wrk's JSON line (``bench/wrk/post_json.lua``)."""
    seconds = raw["duration_us"] / 1e6
    errors = raw["errors"]
    statuses = {str(k): int(v) for k, v in sorted(raw.get("statuses", {}).items())}
    socket_errors = errors["connect"] + errors["read"] + errors["write"] + errors["timeout"]
    expected = statuses.get(str(expect), 0)
    return {
        "requests": raw["requests"],
        "seconds": seconds,
        "rps": raw["requests"] / seconds,
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "non_2xx": errors["status"],
        "socket_errors": socket_errors,
        "statuses": statuses,
        "expected_status": expect,
        # Answers of another status, and requests that got no answer at all.
        "unexpected": sum(statuses.values()) - expected + socket_errors,
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
    for name, target in FACTORIES.items():
        made[name] = servers.factory(name, target, root / name, env_for(name), workers)
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


def post(url: str, body: bytes, header: tuple[str, str]) -> httpx.Response:
    """One request on a new connection (so that every worker of a server is reached)."""
    headers = {"Content-Type": "application/json"}
    if header[0]:
        headers[header[0]] = header[1]
    return httpx.post(url, content=body, headers=headers, timeout=10.0)


def exhaust(url: str, body: Path, header: tuple[str, str], in_a_row: int = 12) -> int:
    """Spend the over-quota caller's plan on every worker: a second of wrk at 32
    connections (the workers of a server each accept some of them, and each counts on
    its own when the quota is in memory), then requests on new connections until
    ``in_a_row`` answers in a row are 429. Before every run of that scenario, in case
    a window ended meanwhile. Returns the requests sent after the burst."""
    wrk(url, body, header, 32, 1, expect=429)  # answers not checked: it only spends
    raw = body.read_bytes()
    sent = streak = 0
    while streak < in_a_row:
        status = post(url, raw, header).status_code
        sent += 1
        streak = streak + 1 if status == 429 else 0
        if sent > 200:
            raise RuntimeError(f"{url}: still not refused after {sent} requests ({status})")
    return sent


def sanity_check(
    scenario: Scenario, url: str, body: Path, header: tuple[str, str]
) -> dict[str, Any]:
    """One request as the scenario sends it, answered with the expected status."""
    if scenario.expect == 429:
        exhaust(url, body, header)
    if scenario.declared_length is not None:
        # httpx sends what it is given; a raw socket sends the lie wrk sends.
        status, text = declared_length_request(url, body.read_bytes(), scenario.declared_length)
        answer_json: Any = json.loads(text) if text.startswith("{") else text
        headers_seen: Mapping[str, str] = {}
    else:
        answer = post(url, body.read_bytes(), header)
        status, text = answer.status_code, answer.text
        answer_json = answer.json()
        headers_seen = answer.headers
    if status != scenario.expect:
        raise RuntimeError(
            f"{scenario.key} {url}: {status}, expected {scenario.expect}: {text[:300]}"
        )
    return {
        "status": status,
        "body": answer_json,
        "ratelimit_header": "RateLimit" in headers_seen,
    }


def declared_length_request(url: str, body: bytes, declared: int) -> tuple[int, str]:
    """POST ``body`` under a declared ``Content-Length`` of ``declared``: (status, body)."""
    import socket

    parsed = httpx.URL(url)
    head = (
        f"POST {parsed.raw_path.decode()} HTTP/1.1\r\nHost: {parsed.host}:{parsed.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
    ).encode()
    with socket.create_connection((parsed.host, parsed.port or 80), timeout=10) as conn:
        conn.sendall(head + body)
        received = b""
        while chunk := conn.recv(65536):  # the server closes after a refusal
            received += chunk
    status_line, _, rest = received.partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), payload.decode(errors="replace")


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


def layers(env: Mapping[str, str], work: Path, *, quick: bool) -> dict[str, Any]:
    """``bench.layers`` in a process of its own (the app's JSON log to a file)."""
    argv = [sys.executable, "-m", "bench.layers", "--model-dir", env["MODEL_DIR"]]
    if quick:
        argv += ["--requests", "100", "--repeats", "3"]
    errors = work / "layers.stderr.log"
    with errors.open("wb") as sink:
        done = subprocess.run(
            argv, cwd=work, env=dict(env), stdout=subprocess.PIPE, stderr=sink, timeout=600
        )
    if done.returncode != 0:
        tail = errors.read_text(errors="replace")[-3000:]
        return {"error": f"bench.layers exited {done.returncode}: {tail}"}
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# --- Redis -------------------------------------------------------------------------


def purpose(command: str) -> str:
    """What a command the app sent is for, by its first key: the quota's keys are
    ``hq:{subject}:...`` (``app.quota``), the failed-auth throttle's are SlowAPI's
    ``LIMITS:LIMITER/...auth-fail...``."""
    words = command.split()
    name = words[0].upper() if words else ""
    key = words[3] if name in ("EVALSHA", "EVAL") and len(words) > 3 else ""
    key = key.strip('"')
    if key.startswith("hq:"):
        return "quota"
    if "auth-fail" in key:
        return "failed-auth throttle"
    return "other"


def redis_commands(
    redis_port: int, url: str, body: Path, header: tuple[str, str], n: int = 100
) -> dict[str, Any]:
    """Commands each guarded request sends to Redis, seen by MONITOR over ``n`` requests.

    MONITOR also shows the commands a Lua script runs (``client_type == "lua"``): they
    are counted apart, as what the scripts do inside Redis. What the app's connections
    send is counted per request; the app pipelines nothing, so each of those commands
    is one round trip. The benchmark's own commands (its control connection) are left
    out.
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
    sent = [
        c["command"]
        for c in window
        if c.get("client_type") != "lua"
        and f"{c.get('client_address')}:{c.get('client_port')}" != ours
    ]
    client_side = Counter(command.split()[0].upper() for command in sent)
    purposes = Counter(purpose(command) for command in sent)
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
        "quota_commands_per_request": purposes.get("quota", 0) / n,
        "client_commands": dict(client_side),
        "commands_by_purpose": dict(purposes),
        "commands_inside_scripts": dict(in_scripts),
        "commandstats_delta": stats,
        "sample": [c["command"][:160] for c in window[:8]],
    }


class RedisMeter:
    """Redis's own CPU time (``INFO cpu``: used_cpu_sys + used_cpu_user, the server
    process's every thread) and its commands (``INFO commandstats``), read over one
    control connection before and after a run."""

    def __init__(self, port: int) -> None:
        import redis as redis_client

        self.conn = redis_client.Redis(host=HOST, port=port, socket_timeout=10)

    def read(self) -> tuple[float, dict[str, tuple[int, int]]]:
        """Redis's CPU seconds so far, and (calls, µs) of each command."""
        cpu = self.conn.info("cpu")
        stats = self.conn.info("commandstats")
        commands = {
            name.removeprefix("cmdstat_"): (int(values["calls"]), int(values["usec"]))
            for name, values in stats.items()
        }
        return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]), commands

    @staticmethod
    def per_request(
        before: tuple[float, dict[str, tuple[int, int]]],
        after: tuple[float, dict[str, tuple[int, int]]],
        requests: int,
    ) -> dict[str, Any]:
        n = max(1, requests)
        calls: dict[str, float] = {}
        usec: dict[str, float] = {}
        for name, (count, spent) in after[1].items():
            count0, spent0 = before[1].get(name, (0, 0))
            # The meter's own INFO (two a run) is nothing the app sends.
            if count > count0 and name != "info":
                calls[name] = (count - count0) / n
                usec[name] = (spent - spent0) / n
        return {
            "redis_cpu_s": after[0] - before[0],
            "redis_cpu_us_per_request": (after[0] - before[0]) / n * 1e6,
            # Every command Redis ran, scripts' commands included (MONITOR tells them apart),
            # and the µs Redis accounts to each (commandstats), per request.
            "redis_calls_per_request": calls,
            "redis_command_us_per_request": usec,
            "redis_scripts_per_request": calls.get("evalsha", 0.0) + calls.get("eval", 0.0),
        }

    def close(self) -> None:
        self.conn.close()


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


@dataclass(frozen=True)
class ProfileTarget:
    """One py-spy window: a scenario's requests to ``path`` on a profiled server."""

    name: str
    scenario: str  # a key of SCENARIOS: its credential, expected status, declared length
    path: str = "/v1/predict"
    body: str = "single"
    concurrency: int = HEADLINE_CONCURRENCY
    # The main profiles get both views and a flamegraph; the others the GIL view only.
    full: bool = False


# Profiled servers, each started once, one worker, prediction log as its scenario has it.
PROFILES: dict[str, tuple[ProfileTarget, ...]] = {
    "ours": (
        ProfileTarget("predict", "c", full=True),
        ProfileTarget("batch", "c", "/v1/predict/batch", "batch1000", BATCH_CONCURRENCY, True),
        ProfileTarget("predict_key", "d"),
        ProfileTarget("n401", "n401"),
        ProfileTarget("f401", "f401"),
        ProfileTarget("q429", "q429"),
        ProfileTarget("s413", "s413"),
    ),
    "ours_redis": (ProfileTarget("predict_redis", "r"),),
    "ours_redis_log": (ProfileTarget("predict_redis_log", "e"),),
    "bare_model": (ProfileTarget("bare_model", "m"),),
    "bare": (ProfileTarget("bare", "a"),),
}


def _drive(
    process: servers.Process,
    target: ProfileTarget,
    s: Scenario,
    body: Path,
    header: tuple[str, str],
    duration: float,
) -> dict[str, Any]:
    """wrk sending ``s``'s requests to ``target.path`` for ``duration`` seconds."""
    url = process.base_url + target.path
    if s.expect == 429:
        exhaust(url, body, header)
    return wrk(
        url,
        body,
        header,
        target.concurrency,
        duration,
        expect=s.expect,
        declared_length=s.declared_length,
    )


def profile_server(
    work: Path,
    env: Mapping[str, str],
    creds: Credentials,
    bodies: Mapping[str, Path],
    server: str,
    targets: Sequence[ProfileTarget],
    seconds: int,
    flamegraph_stem: Path,
    redis_url: str,
) -> dict[str, dict[str, Any]]:
    """One server, one worker, sampled by py-spy while wrk drives each target in turn.

    A full target gets two windows of ``seconds`` under the same load, one after the
    other: first py-spy ``--gil`` (the shares) with a second py-spy writing the same
    view as a flamegraph SVG, then py-spy on every thread (``bench.profiling`` says why
    both); the others get the ``--gil`` window only, of at least 4 s. wrk runs a second
    longer than py-spy so that every sample is under load. A py-spy failure is recorded
    in the view instead of stopping the run.
    """
    root = work / f"profile-{server}"
    (root / "var").mkdir(parents=True)
    server_env = {**env, "VAR_DIR": str(root / "var"), "PREDICTION_LOG_ENABLED": "false"}
    if server.startswith("ours_redis"):
        server_env["REDIS_URL"] = redis_url
    if server == "ours_redis_log":
        server_env["PREDICTION_LOG_ENABLED"] = "true"
    if server.startswith("ours"):
        process = servers.ours(f"profile-{server}", root, server_env, 1)
    else:
        process = servers.factory(f"profile-{server}", FACTORIES[server], root, server_env, 1)
    scenarios = {s.key: s for s in SCENARIOS}
    results: dict[str, dict[str, Any]] = {}
    with running({process.name: process}):
        token = fetch_token(process.base_url, creds) if server.startswith("ours") else ""
        for target in targets:
            s = scenarios[target.scenario]
            header = header_for(s.credential, token, creds)
            body = bodies[target.body]
            window = seconds if target.full else max(4, seconds // 2)
            out: dict[str, Any] = {
                "tool": profiling.version(),
                "path": target.path,
                "scenario": s.key,
                "server": server,
                "expect": s.expect,
                "concurrency": target.concurrency,
                "rate_hz": profiling.RATE,
                "seconds": window,
                "views": {},
            }

            drive = partial(_drive, process, target, s, body, header)
            drive(1)  # warm-up
            views = (("gil", True), ("all_threads", False)) if target.full else (("gil", True),)
            for view, gil in views:
                raw = root / f"{target.name}-{view}.txt"
                recordings = [profiling.record(process.pid, raw, window, gil=gil)]
                svg = root / f"{target.name}-{view}.svg"
                if gil and target.full:
                    recordings.append(
                        profiling.record(process.pid, svg, window, gil=True, fmt="flamegraph")
                    )
                cpu0 = process.cpu_seconds()
                measured = drive(window + 1)
                cpu_us = (process.cpu_seconds() - cpu0) / max(1, measured["requests"]) * 1e6
                spy = profiling.finish(recordings[0])
                result: dict[str, Any] = {
                    "gil_only": gil,
                    "py_spy": spy,
                    "wrk": measured,
                    "server_cpu_us_per_request": cpu_us,
                }
                if len(recordings) > 1:
                    drawn = profiling.finish(recordings[1])
                    if "error" in drawn:
                        result["flamegraph_error"] = drawn["error"]
                    else:
                        flamegraph = flamegraph_stem.with_name(
                            f"{flamegraph_stem.name}-profile-{target.name}.svg"
                        )
                        flamegraph.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(svg, flamegraph)
                        out["flamegraph"] = str(flamegraph)
                if "error" not in spy:
                    if gil and "samples" in spy:
                        # Share of the sampling ticks in which some thread held the GIL
                        # (ticks py-spy could not read are left out): wall time, not CPU.
                        ticks = max(1, profiling.RATE * window - spy["errors"])
                        result["gil_held_fraction"] = min(1.0, spy["samples"] / ticks)
                        result["gil_held_us_per_request"] = (
                            result["gil_held_fraction"] / measured["rps"] * 1e6
                        )
                    # The GIL view splits the server's CPU per request; the other over-counts.
                    result |= profiling.summarize(
                        raw, drop_idle=not gil, us_per_request=cpu_us if gil else None
                    )
                    if not gil:  # threads with a Python stack at a tick, idle ones dropped
                        result["busy_threads"] = result["kept_samples"] / (profiling.RATE * window)
                out["views"][view] = result
                log(
                    f"profile {target.name} {view}: "
                    + (spy.get("error", "")[:200] or f"{result['kept_samples']} samples kept")
                    + (f"  UNEXPECTED {measured['statuses']}" if measured["unexpected"] else "")
                )
            results[target.name] = out
    return results


# --- the run -----------------------------------------------------------------------


def rotated(items: tuple[Scenario, ...], by: int) -> list[Scenario]:
    k = by % len(items)
    return list(items[k:] + items[:k])


def runs_at(concurrency: int) -> tuple[Scenario, ...]:
    return tuple(s for s in SCENARIOS if not s.headline_only or concurrency == HEADLINE_CONCURRENCY)


def run_scenario(
    s: Scenario,
    process: servers.Process,
    header: tuple[str, str],
    body: Path,
    concurrency: int,
    duration: float,
    meter: RedisMeter | None = None,
) -> dict[str, Any]:
    """One measured wrk run of ``s``: its figures, the server's CPU and, given a meter,
    Redis's."""
    url = process.base_url + "/v1/predict"
    if s.expect == 429:
        exhaust(url, body, header)
    redis0 = meter.read() if meter is not None else None
    cpu0 = process.cpu_seconds()
    result = wrk(
        url,
        body,
        header,
        concurrency,
        duration,
        expect=s.expect,
        declared_length=s.declared_length,
    )
    server_cpu = process.cpu_seconds() - cpu0
    result.update(
        scenario=s.key,
        concurrency=concurrency,
        server_cpu_s=server_cpu,
        server_cpu_us_per_request=server_cpu / max(1, result["requests"]) * 1e6,
    )
    if meter is not None and redis0 is not None:
        result |= RedisMeter.per_request(redis0, meter.read(), result["requests"])
    return result


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
    failed: dict[str, int] = {}
    out: dict[str, Any] = {
        "workers": workers,
        "runs": runs,
        "batches": batches,
        "failed_scenarios": failed,
    }
    meter = RedisMeter(redis.port)
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
            warm = run_scenario(s, process, header, bodies["single"], 32, args.warmup)
            if warm["unexpected"]:
                failed[s.key] = failed.get(s.key, 0) + warm["unexpected"]
                log(f"{s.key} warm-up: {warm['statuses']}, expected {s.expect}")
        for repeat in range(args.repeats):
            for concurrency in args.concurrency:
                for s in rotated(runs_at(concurrency), repeat):
                    process, header = targets[s.key]
                    uses_redis = s.server.startswith("ours_redis")
                    result = run_scenario(
                        s,
                        process,
                        header,
                        bodies["single"],
                        concurrency,
                        args.duration,
                        meter if uses_redis else None,
                    )
                    result["repeat"] = repeat
                    runs.append(result)
                    if result["unexpected"]:
                        failed[s.key] = failed.get(s.key, 0) + result["unexpected"]
                    log(
                        f"w{workers} r{repeat} c{concurrency:<3} {s.key:<4} "
                        f"{result['rps']:8.0f} req/s  p50 {result['p50_ms']:7.2f} ms  "
                        f"p99 {result['p99_ms']:7.2f} ms  "
                        f"cpu {result['server_cpu_us_per_request']:6.0f} µs/req"
                        + (
                            f" + Redis {result['redis_cpu_us_per_request']:.0f}"
                            if "redis_cpu_us_per_request" in result
                            else ""
                        )
                        + (
                            f"  UNEXPECTED {result['unexpected']} "
                            f"{result['statuses']} errors {result['socket_errors']}"
                            if result["unexpected"]
                            else ""
                        )
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
                if result["unexpected"]:
                    failed[f"batch{n}"] = failed.get(f"batch{n}", 0) + result["unexpected"]
                log(
                    f"w{workers} r{repeat} batch {n:<4} {result['rows_per_s']:10.0f} rows/s  "
                    f"p99 {result['p99_ms']:7.2f} ms"
                )
        out["prediction_log_rows"] = prediction_log_rows(env)
        if workers == 1:
            r_process, r_header = targets["r"]
            out["redis"] = redis_commands(
                redis.port, r_process.base_url + "/v1/predict", bodies["single"], r_header
            )
            log(f"redis commands per request: {out['redis']['commands_per_request']:.2f}")
        out["peak_rss_mb"] = {name: p.peak_rss_mb() for name, p in processes.items()}
    meter.close()
    if failed:
        log(f"workers={workers}: answers not of the expected status: {failed}")
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
    parser.add_argument(
        "--before",
        type=Path,
        help="results to compare with (default: the newest earlier bench/results/*.json)",
    )
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
            "expected_status": {s.key: s.expect for s in SCENARIOS},
            "headline_concurrency": HEADLINE_CONCURRENCY,
        },
        "environment": environment(),
    }
    # Phases: setup, one per worker count, in-process and components, two profiles.
    total = 1 + len(args.workers) + 1 + 2
    try:
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
            try:
                results["phases"].append(phase(workers, args, work, env, creds, bodies, redis))
            except (ServerFailed, RuntimeError, httpx.HTTPError) as exc:
                log(f"workers={workers} failed: {str(exc)[-2000:]}")
                results.setdefault("failures", []).append(
                    {"workers": workers, "error": str(exc)[-4000:]}
                )
            path.write_text(json.dumps(results, indent=1) + "\n")  # a checkpoint
        log("in-process LoadedModel.predict, and what each part of a request costs alone")
        results["in_process"] = in_process(Path(env["MODEL_DIR"]), bodies, max(5, args.repeats))
        results["components"] = components.measure(Path(env["MODEL_DIR"]), redis.port)
        log("each layer of a guarded request, in process (bench.layers)")
        results["layers"] = layers(env, work, quick=args.quick)
        results["profiles"] = {}
        for server, targets in PROFILES.items():
            log(f"profiling {server}: {', '.join(t.name for t in targets)} under py-spy")
            try:
                results["profiles"] |= profile_server(
                    work,
                    env,
                    creds,
                    bodies,
                    server,
                    targets,
                    args.profile_seconds,
                    path.with_suffix(""),
                    f"redis://{HOST}:{redis.port}/1",
                )
            except (
                ServerFailed,
                RuntimeError,
                httpx.HTTPError,
                OSError,
                subprocess.SubprocessError,
            ) as exc:
                log(f"profile of {server} failed: {str(exc)[-2000:]}")
                for target in targets:
                    results["profiles"].setdefault(
                        target.name,
                        {"path": target.path, "error": f"{type(exc).__name__}: {exc}"[-4000:]},
                    )
    finally:
        redis.stop()
        shutil.rmtree(work, ignore_errors=True)
    steal1 = cpu_steal()
    results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["elapsed_s"] = time.monotonic() - clock0
    total = max(1, steal1[1] - steal0[1])
    results["environment"]["cpu_steal_percent"] = 100 * (steal1[0] - steal0[0]) / total
    before_path = args.before or report.previous_results(path)
    before = json.loads(before_path.read_text()) if before_path else None
    if before_path is not None:
        results["before"] = str(
            before_path.relative_to(ROOT)
            if before_path.resolve().is_relative_to(ROOT)
            else before_path
        )
    results["summary"] = report.summarize(results, before)
    path.write_text(json.dumps(results, indent=1) + "\n")
    log(f"results: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    print(report.console_summary(results["summary"]))
    if not args.no_docs:
        report.write_docs(results, path, args.docs)
        log(f"wrote {args.docs / 'benchmarks.md'}")
    failed = {
        f"w{p['workers']} {key}": count
        for p in results.get("phases", [])
        for key, count in p.get("failed_scenarios", {}).items()
    }
    if failed or results.get("failures"):
        log(f"FAILED: answers not of the expected status {failed}; {results.get('failures', [])}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
