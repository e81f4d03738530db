"""The benchmark's answers by status, its parts of a request, and its aims against a run
before: what decides "met" in docs/benchmarks.md."""

from __future__ import annotations

import json
import shutil
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from bench import profiling, report, run

SITE = "/work/main/.venv/lib/python3.11/site-packages"
STDLIB = "/usr/lib/python3.11"
SNAPSHOT = "/srv/housing-bench-x/src"


def _raw_wrk(statuses: dict[str, int], read_errors: int = 0) -> dict[str, Any]:
    return {
        "requests": sum(statuses.values()),
        "duration_us": 2_000_000,
        "p50_us": 1000,
        "p90_us": 2000,
        "p99_us": 4000,
        "max_us": 9000,
        "statuses": statuses,
        "errors": {"connect": 0, "read": read_errors, "write": 0, "status": 0, "timeout": 0},
    }


def test_answers_of_another_status_and_lost_requests_are_unexpected() -> None:
    good = run.parse_wrk(_raw_wrk({"401": 500}), expect=401)
    assert (good["unexpected"], good["rps"], good["p99_ms"]) == (0, 250.0, 4.0)
    mixed = run.parse_wrk(_raw_wrk({"401": 490, "429": 10}, read_errors=3), expect=401)
    assert mixed["unexpected"] == 13
    assert mixed["statuses"] == {"401": 490, "429": 10}


def test_a_forged_token_keeps_its_header_and_claims() -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.AbCdEf"
    forged = run.forged(token)
    assert forged != token
    assert forged.rpartition(".")[0] == token.rpartition(".")[0]
    assert len(forged) == len(token)


def test_monitor_commands_are_told_apart_by_their_keys() -> None:
    assert run.purpose("EVALSHA 5e1 2 hq:{predict:client:cl_1}:60:1 hq:x 100 1 60 0.5") == "quota"
    assert (
        run.purpose("EVALSHA ad7 1 LIMITS:LIMITER/housing-api/auth-fail/127.0.0.1/30/1/minute 1")
        == "failed-auth throttle"
    )
    assert run.purpose("PING") == "other"


def _stack(*frames: str) -> list[str]:
    return list(frames)


def test_each_sample_goes_to_the_innermost_part_that_names_itself() -> None:
    loop = f"Runner.run ({STDLIB}/asyncio/runners.py:118)"
    guard = f"PredictionGuard.__call__ ({SNAPSHOT}/app/guard.py:200)"
    fastapi = f"APIRoute.handle ({SITE}/fastapi/routing.py:1)"
    model = f"LoadedModel.predict ({SNAPSHOT}/ml/artifacts.py:250)"
    numpy = f"_all ({SITE}/numpy/_core/_methods.py:60)"
    json_loads = f"loads ({STDLIB}/json/__init__.py:346)"
    identify = f"identify ({SNAPSHOT}/app/security.py:140)"
    sqlalchemy = f"execute ({SITE}/sqlalchemy/engine/base.py:1)"
    record = f"RequestContextMiddleware._record ({SNAPSHOT}/app/request_context.py:90)"
    emit = f"JsonFormatter.format ({SNAPSHOT}/monitoring/logs.py:50)"
    assert profiling.part_of(_stack(loop, guard, fastapi, model, numpy)) == "model"
    assert profiling.part_of(_stack(loop, guard, fastapi, json_loads)) == "FastAPI"
    assert profiling.part_of(_stack(loop, guard, identify, sqlalchemy)) == "auth"
    assert profiling.part_of(_stack(loop, record, guard)) == "guard"
    assert profiling.part_of(_stack(loop, record, emit, json_loads)) == "log and metrics"
    assert profiling.part_of(_stack(loop)) == "event loop and other"
    assert profiling.part_of([]) == "event loop and other"


def _run(key: str, repeat: int, rps: float, cpu: float, **extra: Any) -> dict[str, Any]:
    return {
        "scenario": key,
        "concurrency": extra.pop("concurrency", 32),
        "repeat": repeat,
        "rps": rps,
        "p99_ms": extra.pop("p99_ms", 10.0),
        "server_cpu_us_per_request": cpu,
        **extra,
    }


def _phase(runs: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"workers": 1, "runs": runs, "batches": [], "peak_rss_mb": {}, **extra}


def _aim(rows: list[dict[str, Any]], name_start: str) -> dict[str, Any]:
    return next(r for r in rows if r["name"].startswith(name_start))


def test_aims_compare_paired_runs_and_the_run_before() -> None:
    runs = []
    for repeat, (bare, guarded) in enumerate([(6000, 2700), (5000, 2000), (6000, 2100)]):
        runs += [
            _run("a", repeat, bare, 150),
            _run("c", repeat, guarded, 400),
            _run("r", repeat, guarded * 0.9, 420, redis_cpu_us_per_request=20.0 + repeat),
            _run("n401", repeat, bare * 1.2, 120, unexpected=0),
        ]
    after = {"1": _phase(runs, redis={"requests": 100, "quota_commands_per_request": 1.0})}
    before = {"1": _phase([_run("c", 0, 1000, 900), _run("a", 0, 6000, 150)])}
    rows = report.evaluate_aims(after, before)
    jwt = _aim(rows, "guarded, JWT (c) / bare (a)")
    # Per repeat 0.45, 0.40, 0.35: the median of the paired ratios.
    assert jwt["value"] == pytest.approx(0.40)
    assert jwt["before"] == pytest.approx(1000 / 6000)
    assert jwt["met"] is True
    assert jwt["per_cpu"] == pytest.approx(150 / 400)
    assert _aim(rows, "Redis CPU per request")["value"] == pytest.approx(21.0)
    assert _aim(rows, "Redis round trips")["met"] is True
    assert _aim(rows, "no credentials")["met"] is True
    assert _aim(rows, "guarded, JWT (c) / bare + the same model")["met"] is None  # no (m)


def test_a_scenario_with_unexpected_answers_meets_no_aim() -> None:
    runs = [_run("a", 0, 5000, 150), _run("n401", 0, 9000, 100)]
    phases = {"1": _phase(runs, failed_scenarios={"n401": 12})}
    row = _aim(report.evaluate_aims(phases, None), "no credentials")
    assert row["value"] == pytest.approx(1.8)
    assert row["met"] is False
    assert row["unexpected_answers"] == {"n401": 12}
    assert "expected status" in report._verdict(row)


def test_the_run_before_is_the_newest_older_file(tmp_path: Path) -> None:
    for name in ("20261101T000000Z.json", "20261125T160237Z.json", "20261210T000000Z.json"):
        (tmp_path / name).write_text("{}")
    (tmp_path / "20261120T000000Z-profile-predict.svg").write_text("")
    current = tmp_path / "20261207T163602Z.json"
    assert report.previous_results(current) == tmp_path / "20261125T160237Z.json"
    assert report.previous_results(tmp_path / "20261001T000000Z.json") is None


class _Recorder:
    """A raw HTTP server on loopback: records each request's head, answers 413 and
    closes, as the guard answers a declared oversize body."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.heads: list[bytes] = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        self.sock.settimeout(0.2)
        while self.sock.fileno() != -1:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                self.heads.append(data.partition(b"\r\n\r\n")[0])
                conn.sendall(
                    b"HTTP/1.1 413 Content Too Large\r\ncontent-length: 2\r\n"
                    b"connection: close\r\n\r\nno"
                )

    def close(self) -> None:
        self.sock.close()
        self.thread.join(2)


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_wrk_declares_the_length_asked_for_and_counts_statuses(tmp_path: Path) -> None:
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"lotsize": 1.0}))
    server = _Recorder()
    try:
        result = run.wrk(
            f"http://127.0.0.1:{server.port}/v1/predict",
            body,
            ("", ""),
            2,
            1,
            expect=413,
            declared_length=1_048_577,
        )
    finally:
        server.close()
    assert result["requests"] > 0
    assert result["statuses"] == {"413": result["requests"]}
    assert result["unexpected"] == 0
    sent = [h for h in server.heads if h]
    assert sent
    assert all(b"Content-Length: 1048577" in h for h in sent)


def test_the_route_body_parser_and_log_hand_off_are_not_the_model() -> None:
    route = f"{SNAPSHOT}/app/routes/predict.py"
    loop = f"Runner.run ({STDLIB}/asyncio/runners.py:118)"
    assert profiling.part_of([loop, f"_OrjsonRequest.json ({route}:60)"]) == "FastAPI"
    assert profiling.part_of([loop, f"_record ({route}:101)"]) == "log and metrics"
    assert profiling.part_of([loop, f"_single ({route}:130)"]) == "model"
