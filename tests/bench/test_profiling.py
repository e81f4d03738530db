"""The py-spy flame summary of bench.profiling, and its section in the benchmark docs."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import profiling, report

SITE = "/work/main/.venv/lib/python3.11/site-packages"
STDLIB = "/usr/lib/python3.11"
SNAPSHOT = "/srv/housing-bench-x/src"
PROCESS = 'process 42:"python housing-api serve"'
MAIN = f"<module> (/work/main/.venv/bin/housing-api:8);Runner.run ({STDLIB}/asyncio/runners.py:118)"
WORKER = (
    f"Thread._bootstrap ({STDLIB}/threading.py:1002);"
    f"Thread._bootstrap_inner ({STDLIB}/threading.py:1045);"
    f"WorkerThread.run ({SITE}/anyio/_backends/_asyncio.py:1124)"
)
RAW = "\n".join(
    [
        f"{PROCESS};{MAIN};FastAPI.__call__ ({SITE}/fastapi/applications.py:1);"
        f"solve_dependencies ({SITE}/fastapi/dependencies/utils.py:600) 6",
        f"{PROCESS};{MAIN} 2",
        f"{PROCESS};{WORKER};authenticate ({SNAPSHOT}/app/security.py:118);"
        f"_decode ({SNAPSHOT}/auth/tokens.py:40) 3",
        f"{PROCESS};{WORKER};Condition.wait ({STDLIB}/threading.py:327) 9",
        f"{PROCESS} 1",
    ]
)


def _raw(tmp_path: Path) -> Path:
    path = tmp_path / "raw.txt"
    path.write_text(RAW + "\n")
    return path


def test_parse_frame_splits_function_file_and_line() -> None:
    assert profiling.parse_frame("a.<locals>.b (/x/y.py:12)") == ("a.<locals>.b", "/x/y.py", 12)
    assert profiling.parse_frame("f (<string>)") == ("f", "<string>", 0)
    assert profiling.parse_frame("odd") == ("odd", "", 0)


def test_areas_tell_ours_site_packages_and_stdlib_apart() -> None:
    assert profiling.area(f"{SITE}/fastapi/routing.py") == "fastapi"
    assert profiling.area(f"{SNAPSHOT}/app/routes/predict.py") == "app"
    assert profiling.area(f"{STDLIB}/json/decoder.py") == "stdlib:json"
    assert profiling.short_path(f"{SNAPSHOT}/auth/tokens.py") == "auth/tokens.py"


def test_all_threads_view_drops_idle_leaves(tmp_path: Path) -> None:
    summary = profiling.summarize(_raw(tmp_path), drop_idle=True, us_per_request=100.0)
    # Condition.wait (9), Runner.run as the leaf (2) and the empty stack (1) are idle.
    assert (summary["samples"], summary["idle_samples"], summary["kept_samples"]) == (21, 12, 9)
    shares = {a["area"]: a["share"] for a in summary["areas"]}
    assert shares == {"fastapi": 6 / 9, "auth": 3 / 9}
    assert summary["threads"] == {
        "event loop thread": 6 / 9,
        "threadpool and other threads": 3 / 9,
    }
    top = summary["top_self"][0]
    assert top["function"] == "solve_dependencies (fastapi/dependencies/utils.py)"
    assert top["us_per_request"] == pytest.approx(100.0 * 6 / 9)
    inclusive = {f["function"] for f in summary["top_inclusive"]}
    assert "authenticate (app/security.py)" in inclusive
    assert not inclusive & {
        "<module> (housing-api)",
        "Runner.run (asyncio/runners.py)",
        "WorkerThread.run (anyio/_backends/_asyncio.py)",
    }


def test_gil_view_keeps_every_sample(tmp_path: Path) -> None:
    summary = profiling.summarize(_raw(tmp_path), drop_idle=False)
    shares = {a["area"]: a["share"] for a in summary["areas"]}
    assert summary["kept_samples"] == 21
    assert shares["uvloop (C event loop)"] == 2 / 21
    assert shares["(no Python frame)"] == 1 / 21
    assert "us_per_request" not in summary["top_self"][0]


def test_profile_section_renders_errors_and_old_runs(tmp_path: Path) -> None:
    failed = report._profile_section(
        {"path": "/v1/predict", "error": "ProfilerFailed: no ptrace"}, tmp_path, "p.svg"
    )
    assert "ProfilerFailed: no ptrace" in failed
    old = report._profile_section({"requests": 3, "areas": []}, tmp_path, "p.svg")
    assert any("cProfile" in line for line in old)
