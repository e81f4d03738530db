"""Turn a ``bench/results/*.json`` into aims, ratios, docs/benchmarks.md and a plot.

Run: ``python -m bench.report bench/results/<timestamp>.json [--before OLDER.json]`` to
regenerate the docs from a stored run (``bench.run`` calls the same functions at the
end of a run). Without ``--before`` the newest earlier results file is the "before".

Every ratio is the median, over repeats, of the ratio of two figures measured in the
same repeat at the same concurrency and worker count (minutes apart at most), so slow
drift of a shared machine cancels out. The plot needs matplotlib (not a dependency of
the service); without it the docs are written and the plot is skipped.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PLOT_NAME = "benchmarks.png"
MATPLOTLIB_PIN = "matplotlib==3.11.2"
HEADLINE_CONCURRENCY = 32
PLOTTED = ("a", "m", "b", "c", "d", "r", "e")
# The profile that stands for each scenario's path (bench.run.PROFILES).
PROFILE_OF = {
    "a": "bare",
    "m": "bare_model",
    "c": "predict",
    "d": "predict_key",
    "r": "predict_redis",
    "e": "predict_redis_log",
    "n401": "n401",
    "f401": "f401",
    "q429": "q429",
    "s413": "s413",
}


# --- ratios and aims ---------------------------------------------------------------


def _median(values: Iterable[float]) -> float:
    listed = list(values)
    return statistics.median(listed) if listed else float("nan")


def _index(runs: list[dict[str, Any]]) -> dict[tuple[str, int, int], dict[str, Any]]:
    return {(r["scenario"], r["concurrency"], r["repeat"]): r for r in runs}


def _cpu(run: dict[str, Any]) -> float:
    """CPU per request of the whole system under test: the server's, plus Redis's."""
    return float(run["server_cpu_us_per_request"] + run.get("redis_cpu_us_per_request", 0.0))


def paired_ratio(
    runs: list[dict[str, Any]], top: str, bottom: str, concurrency: int, metric: str = "rps"
) -> float:
    """Median over repeats of top/bottom, both measured in the same repeat.

    ``metric="per_cpu"`` compares requests per CPU-second (bottom's CPU per request
    over top's): what a saturated server's throughput ratio would be, and much less
    moved by the neighbours than wall-clock throughput.
    """
    index = _index(runs)
    repeats = sorted({r["repeat"] for r in runs})
    values = []
    for repeat in repeats:
        a = index.get((top, concurrency, repeat))
        b = index.get((bottom, concurrency, repeat))
        if not (a and b):
            continue
        if metric == "per_cpu":
            values.append(_cpu(b) / _cpu(a))
        elif b[metric] > 0:
            values.append(a[metric] / b[metric])
    return _median(values)


def table(runs: list[dict[str, Any]]) -> dict[str, dict[int, dict[str, Any]]]:
    grouped: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        grouped[(run["scenario"], run["concurrency"])].append(run)
    out: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for (scenario, concurrency), group in sorted(grouped.items()):
        statuses: dict[str, int] = defaultdict(int)
        for r in group:
            for status, count in r.get("statuses", {}).items():
                statuses[status] += count
        row: dict[str, Any] = {
            "rps": _median(r["rps"] for r in group),
            "p50_ms": _median(r["p50_ms"] for r in group),
            "p99_ms": _median(r["p99_ms"] for r in group),
            "cpu_us_per_request": _median(r["server_cpu_us_per_request"] for r in group),
            "non_2xx": sum(r["non_2xx"] for r in group),
            "socket_errors": sum(r["socket_errors"] for r in group),
            "statuses": dict(sorted(statuses.items())),
            "unexpected": sum(r.get("unexpected", 0) for r in group),
            "runs": len(group),
        }
        if any("redis_cpu_us_per_request" in r for r in group):
            row["redis_cpu_us_per_request"] = _median(
                r.get("redis_cpu_us_per_request", 0.0) for r in group
            )
            row["redis_scripts_per_request"] = _median(
                r.get("redis_scripts_per_request", float("nan")) for r in group
            )
        out[scenario][concurrency] = row
    return dict(out)


@dataclass(frozen=True)
class Aim:
    """One aim of issue 15, at ``concurrency`` with one worker (and reported for two).

    ``metric``: ``rps`` or ``p99_ms`` (a paired ratio top/bottom), ``redis_cpu`` (µs of
    Redis CPU per request of ``top``), ``round_trips`` (commands the app sends to Redis
    per request, MONITOR). ``before`` names the scenarios of an earlier run that
    measured the same thing, or None where nothing comparable was measured.
    """

    name: str
    top: str
    bottom: str | None
    metric: str
    concurrency: int
    target: float
    higher_is_better: bool
    before: tuple[str, str | None] | None


AIMS: tuple[Aim, ...] = (
    Aim("guarded, JWT (c) / bare (a): throughput", "c", "a", "rps", 32, 0.40, True, ("c", "a")),
    Aim("guarded, API key (d) / bare (a): throughput", "d", "a", "rps", 32, 0.40, True, ("d", "a")),
    Aim(
        "guarded, JWT (c) / bare + the same model (m): throughput",
        "c",
        "m",
        "rps",
        32,
        0.70,
        True,
        None,
    ),
    Aim(
        "guarded, API key (d) / bare + the same model (m): throughput",
        "d",
        "m",
        "rps",
        32,
        0.70,
        True,
        None,
    ),
    Aim(
        "quota in Redis (r) / quota in memory (c): throughput",
        "r",
        "c",
        "rps",
        32,
        0.85,
        True,
        ("r", "c"),
    ),
    Aim("Redis CPU per request (r), µs", "r", None, "redis_cpu", 32, 30.0, False, ("r", None)),
    Aim(
        "Redis round trips per request for the quota (r: commands it sends, MONITOR)",
        "r",
        None,
        "round_trips",
        1,
        1.0,
        False,
        ("e", None),
    ),
    Aim(
        "no credentials → 401 (n401) / bare 200 (a): throughput",
        "n401",
        "a",
        "rps",
        32,
        1.0,
        True,
        None,
    ),
    Aim(
        "forged token → 401 (f401) / bare 200 (a): throughput",
        "f401",
        "a",
        "rps",
        32,
        1.0,
        True,
        None,
    ),
    Aim(
        "over quota → 429 (q429) / bare 200 (a): throughput",
        "q429",
        "a",
        "rps",
        32,
        1.0,
        True,
        None,
    ),
    Aim(
        "declared oversize body → 413 (s413) / bare 200 (a): throughput",
        "s413",
        "a",
        "rps",
        32,
        1.0,
        True,
        None,
    ),
    Aim("prediction log on (e) / off (r): throughput", "e", "r", "rps", 32, 0.90, True, ("e", "r")),
    Aim(
        "guarded, JWT (c) p99 / bare (a) p99, 8 connections",
        "c",
        "a",
        "p99_ms",
        8,
        3.0,
        False,
        ("c", "a"),
    ),
    Aim(
        "guarded, API key (d) p99 / bare (a) p99, 8 connections",
        "d",
        "a",
        "p99_ms",
        8,
        3.0,
        False,
        ("d", "a"),
    ),
)

# Other ratios at every concurrency, without an aim: (name, top, bottom, metric).
CONTEXT: tuple[tuple[str, str, str, str], ...] = (
    ("(c) JWT / (a) bare: requests per CPU-second", "c", "a", "per_cpu"),
    ("(d) API key / (a) bare: requests per CPU-second", "d", "a", "per_cpu"),
    ("(c) JWT / (m) bare + model: requests per CPU-second", "c", "m", "per_cpu"),
    ("(d) API key / (m) bare + model: requests per CPU-second", "d", "m", "per_cpu"),
    ("(r) Redis / (c) memory: requests per CPU-second (Redis's CPU included)", "r", "c", "per_cpu"),
    ("(e) log on / (r) off: requests per CPU-second (Redis's CPU included)", "e", "r", "per_cpu"),
    ("(m) bare + model / (a) bare: throughput", "m", "a", "rps"),
    ("(c) JWT / (b) tutorial: throughput", "c", "b", "rps"),
    ("(b) tutorial / (a) bare: throughput", "b", "a", "rps"),
    ("(d) API key / (c) JWT: throughput", "d", "c", "rps"),
    ("(e) Redis + log / (c) memory, no log: throughput", "e", "c", "rps"),
    ("(c) JWT / (a) bare: p99", "c", "a", "p99_ms"),
    ("(d) API key / (a) bare: p99", "d", "a", "p99_ms"),
    ("(c) JWT / (m) bare + model: p99", "c", "m", "p99_ms"),
)


def _met(value: float, target: float, higher: bool) -> bool | None:
    if value != value:  # NaN: not measured
        return None
    return value >= target if higher else value <= target


def _aim_value(aim: Aim, phase: Mapping[str, Any], keys: tuple[str, str | None]) -> float:
    runs = phase.get("runs", [])
    top, bottom = keys
    if aim.metric == "redis_cpu":
        return _median(
            r["redis_cpu_us_per_request"]
            for r in runs
            if r["scenario"] == top
            and r["concurrency"] == aim.concurrency
            and "redis_cpu_us_per_request" in r
        )
    if aim.metric == "round_trips":
        redis = phase.get("redis") or {}
        value = redis.get(
            "quota_commands_per_request",
            redis.get("commands_per_request", redis.get("round_trips_per_request")),
        )
        return float("nan") if value is None else float(value)
    assert bottom is not None
    return paired_ratio(runs, top, bottom, aim.concurrency, aim.metric)


def _per_cpu(aim: Aim, phase: Mapping[str, Any]) -> float | None:
    if aim.metric != "rps" or aim.bottom is None:
        return None
    return paired_ratio(phase.get("runs", []), aim.top, aim.bottom, aim.concurrency, "per_cpu")


def evaluate_aims(
    phases: Mapping[str, Mapping[str, Any]], before: Mapping[str, Mapping[str, Any]] | None
) -> list[dict[str, Any]]:
    """One row per aim and worker count: before (where comparable), after, met."""
    rows = []
    for workers, phase in phases.items():
        failed = phase.get("failed_scenarios", {})
        old = (before or {}).get(workers)
        for aim in AIMS:
            if aim.metric == "round_trips" and "redis" not in phase:
                continue  # measured with one worker only
            value = _aim_value(aim, phase, (aim.top, aim.bottom))
            was = None
            if old is not None and aim.before is not None:
                was = _aim_value(aim, old, aim.before)
                was = None if was != was else was
            broken = {k: failed[k] for k in (aim.top, aim.bottom) if k and k in failed}
            note = ""
            if aim.metric == "round_trips":
                redis = phase.get("redis") or {}
                by_purpose = redis.get("commands_by_purpose", {})
                n = max(1, redis.get("requests", 1))
                note = f"every command the app sent: {redis.get('commands_per_request', 0):.2f}" + (
                    " a request ("
                    + ", ".join(f"{k} {v / n:.2f}" for k, v in sorted(by_purpose.items()))
                    + ")"
                    if by_purpose
                    else ""
                )
            met = _met(value, aim.target, aim.higher_is_better)
            rows.append(
                {
                    **asdict(aim),
                    "workers": int(workers),
                    "value": value,
                    "before": was,
                    "per_cpu": _per_cpu(aim, phase),
                    # A scenario whose answers were not all its expected status meets nothing.
                    "unexpected_answers": broken,
                    "note": note,
                    "met": False if broken else met,
                }
            )
    return rows


def _phases_by_workers(results: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {str(p["workers"]): p for p in results.get("phases", [])}


def summarize(results: dict[str, Any], before: Mapping[str, Any] | None = None) -> dict[str, Any]:
    summary: dict[str, Any] = {"phases": {}, "aims": [], "targets": []}
    in_process = {row["rows"]: row for row in results.get("in_process", [])}
    phases = _phases_by_workers(results)
    for workers, phase in phases.items():
        runs = phase["runs"]
        concurrencies = sorted({r["concurrency"] for r in runs})
        ratios = []
        specs: list[tuple[str, str, str | None, str, Aim | None]] = [
            (a.name, a.top, a.bottom, a.metric, a) for a in AIMS if a.bottom is not None
        ]
        specs += [(name, top, bottom, metric, None) for name, top, bottom, metric in CONTEXT]
        for name, top, bottom, metric, aim in specs:
            assert bottom is not None
            for concurrency in concurrencies:
                value = paired_ratio(runs, top, bottom, concurrency, metric)
                if value != value:
                    continue  # a refusal, measured at the headline concurrency only
                met = None
                if aim is not None and concurrency == aim.concurrency:
                    met = _met(value, aim.target, aim.higher_is_better)
                ratios.append(
                    {
                        "name": name,
                        "concurrency": concurrency,
                        "value": value,
                        "target": aim.target if aim is not None else None,
                        "higher_is_better": aim.higher_is_better if aim is not None else True,
                        "met": met,
                    }
                )
        batches: dict[int, dict[str, float]] = {}
        grouped: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for run in phase.get("batches", []):
            grouped[run["rows"]].append(run)
        for rows, group in sorted(grouped.items()):
            rows_per_s = _median(r["rows_per_s"] for r in group)
            reference = in_process.get(rows, {}).get("loaded_model_predict_rows_per_s")
            estimator = in_process.get(rows, {}).get("estimator_predict_rows_per_s")
            batches[rows] = {
                "rows_per_s": rows_per_s,
                "rps": _median(r["rps"] for r in group),
                "p50_ms": _median(r["p50_ms"] for r in group),
                "p99_ms": _median(r["p99_ms"] for r in group),
                "cpu_us_per_request": _median(r["server_cpu_us_per_request"] for r in group),
                "non_2xx": sum(r["non_2xx"] for r in group),
                "in_process_rows_per_s": reference or float("nan"),
                "ratio_to_in_process": rows_per_s / reference if reference else float("nan"),
                "estimator_rows_per_s": estimator or float("nan"),
                "ratio_to_estimator": rows_per_s / estimator if estimator else float("nan"),
            }
        rss = {
            name: max(values) if values else None for name, values in phase["peak_rss_mb"].items()
        }
        summary["phases"][workers] = {
            "table": table(runs),
            "ratios": ratios,
            "batches": batches,
            "peak_rss_mb": rss,
            "redis": phase.get("redis"),
            "failed_scenarios": phase.get("failed_scenarios", {}),
        }
    summary["aims"] = evaluate_aims(
        phases, _phases_by_workers(before) if before is not None else None
    )
    summary["targets"] = _earlier_targets(summary)
    return summary


def _earlier_targets(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 9's aims that issue 15 left standing: batches and memory."""
    rows = []
    for workers, phase in summary["phases"].items():
        batch = phase["batches"].get(1000) or phase["batches"].get("1000")
        # The baseline is the scikit-learn estimator's own predict; ours, stricter
        # while the compiled path is the faster of the two, is our LoadedModel.predict.
        for name, key in (
            (
                "batch 1000 rows/s / in-process scikit-learn model.estimator.predict rows/s "
                "(the issue's baseline)",
                "ratio_to_estimator",
            ),
            (
                "batch 1000 rows/s / in-process LoadedModel.predict rows/s "
                "(our compiled path: stricter)",
                "ratio_to_in_process",
            ),
        ):
            if batch:
                value = batch.get(key, float("nan"))
                rows.append(
                    {
                        "name": name,
                        "source": "issue 9",
                        "concurrency": 8,
                        "value": value,
                        "target": 0.5,
                        "higher_is_better": True,
                        "met": value >= 0.5,
                        "workers": int(workers),
                    }
                )
        ours = [
            mb
            for name, mb in phase["peak_rss_mb"].items()
            if mb is not None and name in ("ours", "ours_redis")
        ]
        if ours:
            rows.append(
                {
                    "name": "peak RSS per worker, ours (MiB)",
                    "source": "issue 9",
                    "concurrency": None,
                    "value": max(ours),
                    "target": 200.0,
                    "higher_is_better": False,
                    "met": max(ours) < 200.0,
                    "workers": int(workers),
                }
            )
    return rows


def previous_results(path: Path) -> Path | None:
    """The newest results file in ``path``'s directory older than ``path`` (by name)."""
    older = sorted(p for p in path.parent.glob("*.json") if p.name < path.name)
    return older[-1] if older else None


def _show(value: float | None, aim: Mapping[str, Any]) -> str:
    if value is None or value != value:
        return NONE
    if aim["metric"] == "redis_cpu":
        return f"{value:.1f} µs"
    if aim["metric"] == "round_trips":
        return f"{value:.2f}"
    return f"{value:.2f}x"


def _aim_target(aim: Mapping[str, Any]) -> str:
    sign = "≥" if aim["higher_is_better"] else "≤"
    unit = (
        " µs" if aim["metric"] == "redis_cpu" else ("" if aim["metric"] == "round_trips" else "x")
    )
    return f"{sign} {aim['target']:g}{unit}"


def _verdict(aim: Mapping[str, Any]) -> str:
    if aim["unexpected_answers"]:
        counts = ", ".join(f"({k}) {v}" for k, v in aim["unexpected_answers"].items())
        return f"**no**: answers not of the expected status ({counts})"
    if aim["met"] is None:
        return "not measured"
    return "yes" if aim["met"] else "**no**"


def console_summary(summary: dict[str, Any]) -> str:
    lines = ["", "Aims (issue 15):"]
    width = max((len(row["name"]) for row in summary["aims"]), default=58)
    for row in summary["aims"]:
        lines.append(
            f"  w{row['workers']} c{row['concurrency']:<3} {row['name']:<{width}} "
            f"{_show(row['before'], row):>8} -> {_show(row['value'], row):>8} "
            f"(aim {_aim_target(row)})  "
            + ("met" if row["met"] else ("n/a" if row["met"] is None else "MISSED"))
        )
    for workers, phase in summary["phases"].items():
        if phase.get("failed_scenarios"):
            lines.append(
                f"  w{workers} answers not of the expected status: {phase['failed_scenarios']}"
            )
    return "\n".join(lines)


# --- docs --------------------------------------------------------------------------


NONE = "n/a"


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None or value != value:  # NaN
        return NONE
    return f"{value:,.{digits}f}"


def _aim_rows(summary: dict[str, Any], workers: str) -> list[str]:
    lines = [
        "| aim | C | before | after | after, per CPU-second | target | met |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in summary["aims"]:
        if str(row["workers"]) != workers:
            continue
        per_cpu = row.get("per_cpu")
        lines.append(
            f"| {row['name']} | {row['concurrency'] if row['metric'] != 'round_trips' else 1} | "
            f"{_show(row['before'], row)} | **{_show(row['value'], row)}** | "
            f"{_show(per_cpu, row) if per_cpu is not None else ''} | {_aim_target(row)} | "
            f"{_verdict(row)}{'; ' + row['note'] if row.get('note') else ''} |"
        )
    return lines


def _earlier_rows(summary: dict[str, Any]) -> list[str]:
    lines = [
        "| workers | ratio | concurrency | value | aim | met |",
        "| ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for row in sorted(summary["targets"], key=lambda r: r["workers"]):
        sign = (
            "<" if row["name"].startswith("peak RSS") else "≥" if row["higher_is_better"] else "≤"
        )
        lines.append(
            f"| {row['workers']} | {row['name']} | "
            f"{row['concurrency'] if row['concurrency'] is not None else NONE} | "
            f"{row['value']:.2f} | {sign} {row['target']:g} | {'yes' if row['met'] else '**no**'} |"
        )
    return lines


def _parts(profile: Mapping[str, Any] | None) -> dict[str, float] | None:
    """µs of server CPU per request in each part of the request (the GIL view's shares
    times the CPU per request measured in the same window), or None."""
    if not profile:
        return None
    gil = profile.get("views", {}).get("gil", {})
    if "parts" not in gil:
        return None
    cpu = gil["server_cpu_us_per_request"]
    return {row["part"]: row["share"] * cpu for row in gil["parts"]}


def _profiles(results: Mapping[str, Any]) -> dict[str, Any]:
    profiles = dict(results.get("profiles") or {})
    for old, name in (("profile", "predict"), ("profile_batch", "batch")):
        if old in results and name not in profiles:
            profiles[name] = results[old]
    return profiles


def _parts_section(results: Mapping[str, Any]) -> list[str]:
    from bench.profiling import PART_NAMES

    profiles = _profiles(results)
    shown = [
        (key, name, parts)
        for key, name in PROFILE_OF.items()
        if (parts := _parts(profiles.get(name))) is not None
    ]
    if not shown:
        return []
    lines = [
        "µs of server CPU per request in each part of the request, by scenario: py-spy's "
        "`--gil` samples of a one-worker server (prediction log as the scenario has it), "
        "each sample given to the innermost frame that says what it serves "
        "(`bench.profiling.PARTS`: `app/guard.py` is the guard; `app/security.py`, `auth/` "
        "and the JWT library auth; `app/quota.py`, `app/limits.py`, `limits`, `slowapi` and "
        "the Redis client the quota; `app/request_context.py`, `monitoring/`, `logging` and "
        "`prometheus_client` the log and metrics; the route's `app/routes/predict.py` (but "
        "its orjson body parser, FastAPI's, and its hand-off to the log), `ml/` and NumPy "
        "the model; FastAPI, Starlette, pydantic and the rest of `app/` FastAPI; "
        "uvicorn and httptools the server; what is left is asyncio's and uvloop's own work "
        "and threads' plumbing), times the server's CPU per request in the same window "
        "(/proc). Profiled separately from the measured runs, at concurrency "
        f"{HEADLINE_CONCURRENCY} (a 1000-row batch at 8), so totals differ a little from "
        "the tables above.",
        "",
        "| part | " + " | ".join(f"({key})" for key, _, _ in shown) + " |",
        "| --- |" + " ---: |" * len(shown),
    ]
    for part in PART_NAMES:
        cells = [_fmt(parts.get(part, 0.0)) for _, _, parts in shown]
        lines.append(f"| {part} | " + " | ".join(cells) + " |")
    totals = [_fmt(sum(parts.values())) for _, _, parts in shown]
    lines.append("| **total** | " + " | ".join(f"**{t}**" for t in totals) + " |")
    return lines


def _layers_section(results: Mapping[str, Any]) -> list[str]:
    found = results.get("layers")
    if not found:
        return []
    if "error" in found:
        return ["", "The in-process layer measurement failed:", "", "```", found["error"], "```"]
    cpu = found["cpu_us_per_request"]
    lines = [
        "",
        "### In process, without HTTP: each layer of a guarded request",
        "",
        "From `bench/layers.py`: each app driven through ASGI directly, one request at a "
        "time on uvloop, no server, no sockets, no load generator; process CPU per request "
        "(every thread, the log's queue drained), the median of "
        f"{found['repeats']} samples of {found['requests_per_sample']} requests, the cases "
        "in a rotated order. The guarded app is entered at each layer of its middleware "
        "chain in turn (" + " → ".join(f"`{c}`" for c in found.get("chain", [])) + "), "
        "so each layer's cost is a paired difference. What uvicorn and the sockets add over "
        "HTTP is the same for every app and is not here.",
        "",
        "| case | CPU µs per request |",
        "| --- | ---: |",
    ]
    for name, value in cpu.items():
        lines.append(f"| {name} | {_fmt(value)} |")
    lines += ["", "| layer of (c) | µs per request |", "| --- | ---: |"]
    for name, value in found.get("layers_us", {}).items():
        lines.append(f"| {name} | {_fmt(value)} |")
    return lines


def _layers_sentence(results: Mapping[str, Any], top: str, bottom: str) -> str:
    found = results.get("layers") or {}
    cpu = found.get("cpu_us_per_request")
    if not cpu or top not in cpu or bottom not in cpu:
        return ""
    text = (
        f" In process, without HTTP (`bench/layers.py`): ({top}) {cpu[top]:,.0f} µs, "
        f"({bottom}) {cpu[bottom]:,.0f} µs"
    )
    if top in ("c", "d") and found.get("layers_us"):
        text += "; the layers of (c): " + ", ".join(
            f"{name} {value:,.0f} µs" for name, value in found["layers_us"].items()
        )
    return text + "."


def _cpu_of(phase: Mapping[str, Any], key: str, concurrency: int) -> float | None:
    row = phase["table"].get(key, {}).get(concurrency) or phase["table"].get(key, {}).get(
        str(concurrency)
    )
    return None if row is None else float(row["cpu_us_per_request"])


def _row_of(phase: Mapping[str, Any], key: str, concurrency: int) -> Mapping[str, Any]:
    table_ = phase["table"].get(key, {})
    found: Mapping[str, Any] = table_.get(concurrency) or table_.get(str(concurrency)) or {}
    return found


def _deltas(results: Mapping[str, Any], top: str, bottom: str, count: int = 4) -> str:
    profiles = _profiles(results)
    high = _parts(profiles.get(PROFILE_OF.get(top, "")))
    low = _parts(profiles.get(PROFILE_OF.get(bottom, "")))
    if high is None or low is None:
        return ""
    diff = {part: high.get(part, 0.0) - low.get(part, 0.0) for part in set(high) | set(low)}
    ranked = sorted(diff.items(), key=lambda kv: -abs(kv[1]))[:count]
    text = ", ".join(f"{part} {value:+,.0f} µs" for part, value in ranked)
    return f" By part (profiles of ({top}) and ({bottom}), µs per request): {text}."


# What the figures cannot show by themselves, per scenario.
NOTES = {
    "s413": " The guard answers a declared oversize body without reading it, so it must "
    "close the connection (`Connection: close`: where the next request would start is "
    "unknown); every refused request therefore costs a TCP connection set up and torn "
    "down on both sides (wrk reconnects), which a bare 200 over keep-alive does not pay.",
    "f401": " A forged token is a well-formed JWT under a known key: its signature is "
    "checked in full (an HMAC-SHA256 through python-jose) on every request, never cached, "
    "and each failure is counted in the failed-authentication throttle's moving window "
    "and in the metrics.",
    "q429": " An over-quota caller is authenticated (from the verifier's cache), charged "
    "(refused), and answered with the RateLimit fields and Retry-After.",
}


def why_missed(results: Mapping[str, Any], summary: Mapping[str, Any]) -> list[str]:
    """One paragraph per missed aim (one worker): where its time goes."""
    phase = summary["phases"].get("1")
    if phase is None:
        return []
    lines = []
    for aim in summary["aims"]:
        if aim["workers"] != 1 or aim["met"] is not False:
            continue
        c = aim["concurrency"]
        top, bottom = aim["top"], aim["bottom"]
        head = f"- **{aim['name']}: {_show(aim['value'], aim)}, aim {_aim_target(aim)}.**"
        if aim["unexpected_answers"]:
            lines.append(
                f"{head} The scenario's answers were not all of its expected status: "
                f"{aim['unexpected_answers']} (see the tables' status counts)."
            )
            continue
        if aim["metric"] == "rps" and bottom is not None:
            t_row, b_row = _row_of(phase, top, c), _row_of(phase, bottom, c)
            t_cpu = t_row.get("cpu_us_per_request", float("nan"))
            b_cpu = b_row.get("cpu_us_per_request", float("nan"))
            redis = t_row.get("redis_cpu_us_per_request")
            extra = f" (and Redis {redis:,.0f} µs)" if redis is not None else ""
            budget = b_cpu / aim["target"]
            text = (
                f"{head} ({top}) costs {t_cpu:,.0f} µs of server CPU a request{extra} against "
                f"({bottom})'s {b_cpu:,.0f} µs (c={c}, medians): {aim['target']:g}x would allow "
                f"at most {budget:,.0f} µs, {t_cpu - budget:,.0f} µs less."
            )
            per_cpu = aim.get("per_cpu")
            if per_cpu is not None and per_cpu == per_cpu:
                text += f" In requests per CPU-second the ratio is {per_cpu:.2f}."
            lines.append(
                text
                + NOTES.get(top, "")
                + _deltas(results, top, bottom)
                + _layers_sentence(results, top, bottom)
            )
        elif aim["metric"] == "p99_ms" and bottom is not None:
            t_row, b_row = _row_of(phase, top, c), _row_of(phase, bottom, c)
            t_cpu = t_row.get("cpu_us_per_request", 0.0)
            b_cpu = b_row.get("cpu_us_per_request", 0.0)
            lines.append(
                f"{head} p99 at {c} connections: ({top}) {t_row.get('p99_ms', 0):.2f} ms, "
                f"({bottom}) {b_row.get('p99_ms', 0):.2f} ms; p50 {t_row.get('p50_ms', 0):.2f} "
                f"against {b_row.get('p50_ms', 0):.2f} ms. With {c} connections on one worker "
                f"a request waits behind the others: {c} x {t_cpu:,.0f} µs of CPU is "
                f"{c * t_cpu / 1000:.2f} ms for ({top}), {c * b_cpu / 1000:.2f} ms for "
                f"({bottom}): the tail follows the CPU per request." + _deltas(results, top, bottom)
            )
        elif aim["metric"] == "redis_cpu":
            runs = [
                r
                for r in _phases_by_workers(results).get("1", {}).get("runs", [])
                if r["scenario"] == top and r["concurrency"] == c
            ]
            names = sorted({k for r in runs for k in r.get("redis_command_us_per_request", {})})
            spent = {
                name: _median(
                    r.get("redis_command_us_per_request", {}).get(name, 0.0) for r in runs
                )
                for name in names
            }
            inside = ", ".join(f"{name} {value:.1f} µs" for name, value in spent.items())
            total = aim["value"]
            scripts = spent.get("evalsha", 0.0) + spent.get("eval", 0.0)
            text = f"{head} Redis's CPU is `INFO cpu` over the runs of ({top}) at c={c}."
            if spent:
                text += (
                    f" Of its {total:.1f} µs a request, its commands account for "
                    f"{scripts:.1f} µs (commandstats per request: {inside}; a script's GET and "
                    "INCRBY are counted both on their own and within its EVALSHA); the other "
                    f"{total - scripts:.1f} µs are Redis reading, parsing and answering the "
                    "request over its socket (its event loop and system calls, on a machine "
                    "whose two cores are busy with the server and wrk)."
                )
            lines.append(text)
        elif aim["metric"] == "round_trips":
            redis = phase.get("redis") or {}
            lines.append(
                f"{head} Commands the app sent per request: {redis.get('client_commands')}, "
                f"over {redis.get('requests')} requests."
            )
    return lines


def _top_parts(results: Mapping[str, Any], name: str = "predict", count: int = 3) -> str:
    profile = _profiles(results).get(name) or {}
    parts = _parts(profile)
    gil = profile.get("views", {}).get("gil", {})
    if parts is None:
        return ""
    ranked = sorted(parts.items(), key=lambda kv: -kv[1])[:count]
    functions = ", ".join(
        f"`{f['function']}` {f['share'] * gil['server_cpu_us_per_request']:,.0f} µs"
        for f in gil.get("top_self", [])[:count]
    )
    return (
        f"On the guarded path ((c), JWT, quota in memory), {gil['server_cpu_us_per_request']:,.0f}"
        " µs of server CPU a request, the largest parts are "
        + ", ".join(f"{part} ({value:,.0f} µs)" for part, value in ranked)
        + f"; the functions with the most samples of their own: {functions}."
    )


def write_docs(results: dict[str, Any], source: Path, docs: Path) -> None:
    summary = results["summary"]
    scenarios: dict[str, str] = results["settings"]["scenarios"]
    expected: dict[str, int] = results["settings"].get("expected_status", {})
    env = results["environment"]
    settings = results["settings"]
    docs.mkdir(parents=True, exist_ok=True)
    plotted = write_plot(summary, docs / PLOT_NAME)
    try:
        shown_source = source.resolve().relative_to(ROOT)
    except ValueError:
        shown_source = source
    before = results.get("before")
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `bench/report.py` from `{shown_source}` "
        f"(run started {results['started_at']}, {results['elapsed_s'] / 60:.1f} min"
        + (f"; before: `{before}`" if before else "")
        + "). Do not edit by hand: run `make bench` again.",
        "",
        "The machine is shared and noisy, so **ratios measured side by side are the results**;",
        "absolute numbers are only for orientation. Each figure is the median of "
        f"{settings['repeats']} runs of {settings['duration_s']:g} s; each ratio is the median of "
        "per-repeat ratios of two figures measured minutes apart at most.",
        "",
        "## Command",
        "",
        "```sh",
        "make bench            # = .venv/bin/python -m bench.run",
        "python -m bench.run --quick   # 1-second smoke run, no docs",
        "python -m bench.report bench/results/<timestamp>.json   # regenerate this page",
        "```",
        "",
        f"This run: `{results['command']}`.",
        "",
        "## Environment",
        "",
        f"- CPU: {env['cpu']}, {env['cores']} cores shared with the load generator "
        f"(and Redis); host CPU steal during the run: {env.get('cpu_steal_percent', 0):.1f} %.",
        f"- Python {env['python']}, kernel {env['kernel']}, {env['wrk']}, {env['redis_server']}.",
        "- " + ", ".join(f"{k} {v}" for k, v in env["packages"].items()) + ".",
        f"- wrk: `-t{settings['wrk_threads']} -c<C> -d{settings['duration_s']:g}s --latency "
        "-s bench/wrk/post_json.lua`, "
        f"{settings['warmup_s']:g} s warm-up per scenario; batches at "
        f"-c{settings['batch_concurrency']}. The Lua script counts the answers by status "
        "(the same script, so the same load generator, for every scenario); a scenario "
        "whose answers are not all its expected status is marked failed.",
        "- Servers: ours is `housing-api serve --workers N` (uvicorn with uvloop and "
        "httptools for 1 worker, gunicorn with uvicorn workers for 2); the baselines run from "
        "factories in `bench/baselines/` with the same server flags (`bench/servers.py`). Ours "
        "writes the app's JSON log event and metrics for every request; the baselines log "
        "nothing per request. The prediction log (`PREDICTION_LOG_ENABLED`) is on in (e) "
        "only. Ours parses bodies with orjson, the baselines with FastAPI's `json.loads` "
        "(about 1 µs more for this body, in the baselines' disfavour).",
        "- Settings: "
        + ", ".join(f"`{k}={v}`" for k, v in settings["server_env"].items())
        + ". The limits are checked on every request but never reached by the scenarios "
        "answered 200; load shedding never triggers. `RATE_LIMIT_AUTH_FAILURES` is per "
        "second so that the forged-token flood, from one address, keeps being answered 401: "
        "under the default 30/minute the failed-authentication throttle answers 429 from "
        "the 31st failure on.",
        "",
        "Scenarios (all POST /v1/predict with the same body; expected status):",
        "",
    ]
    lines += [
        f"- **({key})** {label} — {expected.get(key, 200)}" for key, label in scenarios.items()
    ]
    lines += [
        "",
        "Reading the numbers:",
        "",
        "- Wall-clock ratios swing by ±30 % between runs on this machine (p99 ratios more);",
        "  the *requests per CPU-second* figures (server CPU, plus Redis's for (e) and (r))",
        "  are the steadier measure of what each part costs, and what a saturated server's",
        "  throughput ratio would be.",
        "- Redis CPU is Redis's own `used_cpu_sys + used_cpu_user` (`INFO cpu`) over each run",
        "  divided by the run's requests; its commands per request come from `INFO",
        "  commandstats` over the same runs, and from MONITOR over sequential requests.",
        "- The refusals run at the headline concurrency only.",
        "- [scaling.md](scaling.md) turns these figures into a capacity plan.",
        "",
        "## Aims (issue 15)",
        "",
        f'At concurrency {HEADLINE_CONCURRENCY} unless the row says otherwise (C). "Before" is '
        + (f"`{before}`" if before else "the previous results file")
        + ", where it measured the same thing: the guards then were FastAPI dependencies and "
        "SlowAPI's moving window (its (r)/(c) compared that window in Redis and in memory; "
        "its Redis commands were counted on (e), the prediction log on: two EVALSHA "
        "pipelined in one round trip, so its 2.05 commands were about one round trip and "
        "a read of the throttle's window now and then); the baseline "
        '"bare + the same model" and the refusal scenarios are new. Issue 15 replaced '
        "issue 9's aims of 0.70x bare and a p99 within 2x bare.",
        "",
    ]
    for workers in summary["phases"]:
        lines += [f"### {workers} worker{'s' if workers != '1' else ''}", ""]
        lines += _aim_rows(summary, workers)
        lines.append("")
    top = _top_parts(results)
    missed = why_missed(results, summary)
    lines += ["## Where the time goes", ""]
    if top:
        lines += [top, ""]
    if missed:
        lines += ["Each missed aim (one worker):", "", *missed, ""]
    lines += _parts_section(results)
    lines += _layers_section(results)
    lines += [
        "",
        f"## CPU per request, per scenario (concurrency {HEADLINE_CONCURRENCY})",
        "",
    ]
    for workers, phase in summary["phases"].items():
        lines += [
            f"{workers} worker{'s' if workers != '1' else ''}:",
            "",
            "| scenario | expected | answers | unexpected | req/s | server CPU µs/req "
            "| Redis CPU µs/req | Redis scripts/req |",
            "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for key in scenarios:
            row = _row_of(phase, key, HEADLINE_CONCURRENCY)
            if not row:
                continue
            answers = ", ".join(f"{s}: {n:,}" for s, n in row.get("statuses", {}).items())
            lines.append(
                f"| ({key}) | {expected.get(key, 200)} | {answers or NONE} | "
                f"{row.get('unexpected', 0):,} | {_fmt(row['rps'])} | "
                f"{_fmt(row['cpu_us_per_request'])} | "
                f"{_fmt(row.get('redis_cpu_us_per_request'), 1)} | "
                f"{_fmt(row.get('redis_scripts_per_request'), 3)} |"
            )
        lines.append("")
    lines += [
        "All ratios at every concurrency (✗: aim missed; rows without an aim are context):",
        "",
    ]
    concurrencies = settings["concurrency"]
    lines.append("| workers | ratio | aim | " + " | ".join(f"c={c}" for c in concurrencies) + " |")
    lines.append("| ---: | --- | ---: |" + " ---: |" * len(concurrencies))
    for workers, phase in summary["phases"].items():
        names = list(dict.fromkeys(r["name"] for r in phase["ratios"]))
        for name in names:
            found = {r["concurrency"]: r for r in phase["ratios"] if r["name"] == name}
            cells = []
            aim = ""
            for c in concurrencies:
                r = found.get(c)
                if r is None:
                    cells.append(NONE)
                    continue
                cells.append(f"{r['value']:.2f}" + (" ✗" if r["met"] is False else ""))
                if r["target"] is not None and r["met"] is not None:
                    aim = f"{'≥' if r['higher_is_better'] else '≤'} {r['target']:g} at c={c}"
            lines.append(f"| {workers} | {name} | {aim or NONE} | " + " | ".join(cells) + " |")
    for workers, phase in summary["phases"].items():
        lines += [
            "",
            f"## {workers} worker{'s' if workers != '1' else ''}: requests/s, latency, "
            "server CPU per request",
            "",
            "| scenario | C | req/s | p50 ms | p99 ms | server CPU µs/req | answers |",
            "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for key in scenarios:
            for c, row in sorted(phase["table"].get(key, {}).items(), key=lambda kv: int(kv[0])):
                cpu = _fmt(row["cpu_us_per_request"])
                if "redis_cpu_us_per_request" in row:
                    cpu += f" (+ Redis {_fmt(row['redis_cpu_us_per_request'])})"
                answers = ", ".join(f"{s}: {n:,}" for s, n in row.get("statuses", {}).items())
                if row.get("socket_errors"):
                    answers += f"; socket errors {row['socket_errors']:,}"
                lines.append(
                    f"| ({key}) | {c} | {_fmt(row['rps'])} | {_fmt(row['p50_ms'], 2)} | "
                    f"{_fmt(row['p99_ms'], 2)} | {cpu} | {answers or NONE} |"
                )
        lines += [
            "",
            "Batches, /v1/predict/batch with a JWT, against in-process predictions on the "
            "same rows (one core, no HTTP): our `LoadedModel.predict` (the compiled path the "
            "route serves) and the scikit-learn estimator's own `model.estimator.predict` "
            "(issue 9's baseline):",
            "",
            "| rows | req/s | rows/s | p50 ms | p99 ms | server CPU µs/req "
            "| LoadedModel.predict rows/s | ratio | estimator.predict rows/s | ratio |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for rows, b in phase["batches"].items():
            lines.append(
                f"| {rows} | {_fmt(b['rps'])} | {_fmt(b['rows_per_s'])} | {_fmt(b['p50_ms'], 2)} | "
                f"{_fmt(b['p99_ms'], 2)} | {_fmt(b['cpu_us_per_request'])} | "
                f"{_fmt(b['in_process_rows_per_s'])} | {_fmt(b['ratio_to_in_process'], 3)} | "
                f"{_fmt(b.get('estimator_rows_per_s'))} | "
                f"{_fmt(b.get('ratio_to_estimator'), 3)} |"
            )
        lines += ["", "Peak RSS per worker (VmHWM, MiB, the largest worker of each server):", ""]
        lines.append("| server | MiB |")
        lines.append("| --- | ---: |")
        for name, mb in phase["peak_rss_mb"].items():
            lines.append(f"| {name} | {_fmt(mb, 1)} |")
    lines += ["", "## Earlier aims still standing (issue 9)", ""]
    lines += _earlier_rows(summary)
    for failure in results.get("failures", []):
        lines += [
            "",
            f"**Workers={failure['workers']} could not be measured:**",
            "",
            "```",
            failure["error"][-1500:],
            "```",
        ]
    lines += _in_process_section(results)
    lines += _components_section(results.get("components"))
    lines += _redis_section(summary)
    cores = env.get("cores", "the")
    profiles = _profiles(results)
    lines += _profile_section(profiles.get("predict"), docs, "profile-predict.svg", cores)
    lines += _profile_section(profiles.get("batch"), docs, "profile-batch.svg", cores)
    lines += ["", "## Plot", ""]
    if plotted:
        lines.append(f"![throughput and p99 against concurrency]({PLOT_NAME})")
    else:
        lines.append(
            f"`{PLOT_NAME}` was not drawn: matplotlib is not installed "
            f"(`pip install {MATPLOTLIB_PIN}`, then `python -m bench.report {shown_source}`)."
        )
    (docs / "benchmarks.md").write_text("\n".join(lines) + "\n")


def _in_process_section(results: dict[str, Any]) -> list[str]:
    rows = results.get("in_process") or []
    if not rows:
        return []
    lines = [
        "",
        "## In process: where a batch's time goes without HTTP",
        "",
        "µs per call, median of repeats (one thread). `validate_json` is "
        "`BatchV1.model_validate_json`, `build_matrix` the float64 matrix as the route builds "
        "it, `serialize` the `BatchPrediction` JSON.",
        "",
        "| rows | LoadedModel.predict | estimator.predict | validate_json "
        "| json.loads + validate | build_matrix | serialize |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row['rows']} | {row['loaded_model_predict_us']:.1f} | "
            f"{row['estimator_predict_us']:.1f} | {row['validate_json_us']:.1f} | "
            f"{row.get('json_loads_then_validate_us', float('nan')):.1f} | "
            f"{row['build_matrix_us']:.1f} | {row['serialize_us']:.1f} |"
        )
    return lines


def _components_section(components: dict[str, Any] | None) -> list[str]:
    if not components:
        return []
    lines = [
        "",
        "## Each part of a request on its own (in process, µs per call)",
        "",
        "From `bench/components.py`: median of repeats, one thread, no profiler.",
        "",
        "| part | µs |",
        "| --- | ---: |",
    ]

    def row(label: str, value: Any) -> None:
        if isinstance(value, int | float):
            lines.append(f"| {label} | {value:,.1f} |")

    pool = components.get("threadpool", {})
    row(
        "one `run_in_threadpool` hop (each plain-`def` dependency or endpoint)",
        pool.get("run_in_threadpool_us"),
    )
    row(
        "JWT check, `decode_access_token` (HS256)",
        components.get("jwt", {}).get("decode_access_token_us"),
    )
    model = components.get("model", {})
    row(
        f"model v1 `LoadedModel.predict`, 1 row ({model.get('estimator')})",
        model.get("loaded_model_predict_1_row_us"),
    )
    row("model v1 scikit-learn `predict`, 1 row", model.get("estimator_predict_1_row_us"))
    for name, part in model.get("parts", {}).items():
        served = "compiled plan" if part.get("compiled") else "scikit-learn"
        difference = part.get("max_relative_difference_on_probe_rows")
        agreement = "" if difference is None else f"; at most {difference:.1e} from scikit-learn"
        row(
            f"part `{name}` ({part['inner']}), 1 row, as served ({served}{agreement})",
            part.get("predict_1_row_us"),
        )
        row(f"part `{name}`: the same, 1000 rows", part.get("predict_1000_rows_us"))
        row(f"part `{name}`: scikit-learn's `predict`, 1 row", part.get("sklearn_predict_1_row_us"))
        row(
            f"part `{name}`: scikit-learn's `predict`, 1000 rows",
            part.get("sklearn_predict_1000_rows_us"),
        )
    quota = components.get("quota", {})
    for key, label in (
        ("memory_hit_us", "quota hit, in memory (`MemoryQuota.hit`)"),
        ("redis_hit_us", "quota hit, in Redis (`Quota.hit`: one EVALSHA, awaited on uvloop)"),
        ("headers_us", "the RateLimit fields of an answer (`QuotaAnswer.headers`)"),
        ("throttle_clear_us", "failed-auth throttle check, address known clear"),
    ):
        row(label, quota.get(key))
    validation = components.get("validation", {})
    row("`HouseV1.model_validate_json`", validation.get("house_model_validate_json_us"))
    row(
        "`json.loads` + `HouseV1.model_validate`",
        validation.get("json_loads_then_model_validate_us"),
    )
    errors = [f"{k}: {v['error']}" for k, v in components.items() if "error" in v]
    if errors:
        lines += ["", "Not measured: " + "; ".join(errors)]
    return lines


def _redis_section(summary: dict[str, Any]) -> list[str]:
    redis = next((p["redis"] for p in summary["phases"].values() if p.get("redis")), None)
    if not redis:
        return []
    n = redis["requests"]
    # Runs before the rename stored the same count as "round_trips_per_request".
    commands = redis.get("commands_per_request", redis.get("round_trips_per_request"))
    sent = ", ".join(f"{k} {v / n:.2f}" for k, v in redis["client_commands"].items())
    inside = ", ".join(f"{k} {v / n:.2f}" for k, v in redis["commands_inside_scripts"].items())
    purposes = ", ".join(
        f"{k} {v / n:.2f}" for k, v in sorted(redis.get("commands_by_purpose", {}).items())
    )
    lines = [
        "",
        "## Redis: what one quota check costs",
        "",
        f"MONITOR over {n} sequential guarded requests to (r): "
        f"**{commands:.2f} commands per request from the app** ({sent or 'none'}"
        + (f"; by what they are for: {purposes}" if purposes else "")
        + "); "
        f"run by the scripts inside Redis, per request: {inside or 'none'}. MONITOR shows "
        'the commands a Lua script runs with `client_type == "lua"`; they are counted apart. '
        "The app pipelines nothing, so each command it sends is one round trip. The "
        "failed-authentication throttle reads the caller address's window at most once a "
        "second per worker while it is under half used (`FailureThrottle` in "
        "`app/limits.py`), so over many requests it adds a read a second at most.",
        "",
        "| command | calls | µs in Redis per call |",
        "| --- | ---: | ---: |",
    ]
    for name, stat in sorted(redis["commandstats_delta"].items()):
        lines.append(f"| {name} | {stat['calls']} | {stat['usec'] / max(1, stat['calls']):.1f} |")
    return lines


def _share(value: float | None) -> str:
    return NONE if value is None else f"{100 * value:.1f} %"


def _profile_section(
    profile: dict[str, Any] | None, docs: Path, svg_name: str, cores: object = "the"
) -> list[str]:
    if not profile:
        return []
    path = profile.get("path", "/v1/predict")
    concurrency = profile.get("concurrency", 32)
    lines = [
        "",
        f"## Profile: {path} with a JWT, 1 worker, concurrency {concurrency}",
        "",
    ]
    if "error" in profile:
        return [*lines, "py-spy could not profile this run:", "", "```", profile["error"], "```"]
    views = profile.get("views")
    if views is None:
        return [
            *lines,
            "This run was profiled with cProfile, before the benchmark used py-spy: "
            "run `make bench` again for the sampled flame summary.",
        ]
    gil, every = views.get("gil", {}), views.get("all_threads", {})
    flamegraph = Path(profile.get("flamegraph", ""))
    if profile.get("flamegraph") and flamegraph.is_file():
        shutil.copyfile(flamegraph, docs / svg_name)
        drawn = f"Flamegraph of the GIL samples: [{svg_name}]({svg_name})."
    elif (docs / svg_name).is_file():
        drawn = f"Flamegraph of the GIL samples (from an earlier run): [{svg_name}]({svg_name})."
    else:
        drawn = "No flamegraph: " + gil.get("flamegraph_error", "not kept with this run.")
    lines += [
        f"{profile['tool']} sampled our server (`housing-api serve` as (c) runs it, one "
        f"worker, prediction log off) {profile['rate_hz']} times a second for "
        f"{profile['seconds']} s, without stopping it (`--nonblocking`), while wrk sent "
        f"{path} with a JWT at concurrency {concurrency}; once with `--gil`, then once on "
        "every thread. " + drawn,
        "",
    ]
    for label, view in (("--gil", gil), ("every thread", every)):
        if "error" in view.get("py_spy", {}):
            lines += [f"py-spy ({label}) failed:", "", "```", view["py_spy"]["error"], "```", ""]
    if "areas" not in gil:
        return lines
    wrk = gil["wrk"]
    cpu_us = gil.get("server_cpu_us_per_request", float("nan"))
    threads = ", ".join(f"{name} {_share(v)}" for name, v in gil["threads"].items())
    lines += [
        f"**The shares are of the samples in which a thread held the GIL** (`py-spy --gil`): "
        f"with one worker, a sample holding the GIL is work nothing else in the process could "
        f"do at that moment, so this is the honest CPU view of the Python server. In the "
        f"window, wrk got {wrk['rps']:,.0f} req/s at {_fmt(cpu_us)} µs of server CPU per "
        f"request (/proc). The GIL was held in {_share(gil.get('gil_held_fraction'))} of "
        f"the sampling ticks ({gil['py_spy'].get('samples', 0):,} samples; "
        f"{gil['py_spy'].get('errors', 0):,} ticks py-spy could not read are left out), "
        f"{_fmt(gil.get('gil_held_us_per_request'))} µs of wall time per request; a thread "
        f"keeps the GIL while the OS runs something else on its core ({cores} cores shared "
        "with wrk and py-spy), so that can exceed the CPU time, and **the µs columns split "
        f"the CPU: share times {_fmt(cpu_us)} µs**. By thread: {threads}.",
        "",
    ]
    if "areas" in every:
        every_cores = every["server_cpu_us_per_request"] * every["wrk"]["rps"] / 1e6
        dropped = ", ".join(f"`{k}` {v:,}" for k, v in every["idle_leaves"].items())
        lines += [
            "Why not every thread: without `--gil` py-spy samples every thread that has a "
            "Python stack, and in `--nonblocking` mode it cannot tell a running thread from "
            "one blocked on a lock or waiting for the GIL. Of its "
            f"{every['samples']:,} samples, {every['idle_samples']:,} ended in idle leaves and "
            f"are dropped ({dropped or 'none'}); the {every['kept_samples']:,} left stand for "
            f"{every['busy_threads']:.2f} busy threads on average, against "
            f"{_fmt(every_cores, 2)} cores of server CPU (/proc) in the same window, on "
            f"{cores} cores: this view neither tells a thread waiting for the GIL from a "
            "running one nor sees uvloop's C work (its last Python frame, `Runner.run`, is "
            "dropped as idle). It is shown beside the GIL "
            "one because it is the only one that sees native code releasing the GIL (NumPy "
            "in the model). Sampling every thread also costs py-spy "
            f"{every['py_spy'].get('py_spy_cpu_s', 0):.1f} CPU-s against "
            f"{gil['py_spy'].get('py_spy_cpu_s', 0):.1f} for `--gil`.",
            "",
        ]
    every_areas = {a["area"]: a["share"] for a in every.get("areas", [])}
    lines += [
        "By package (self samples):",
        "",
        "| package | share, GIL | µs/req | share, every thread (idle dropped) |",
        "| --- | ---: | ---: | ---: |",
    ]
    shown = set()
    for area in gil["areas"][:18]:
        shown.add(area["area"])
        lines.append(
            f"| {area['area']} | {_share(area['share'])} | "
            f"{_fmt(area['share'] * cpu_us, 1)} | "
            f"{_share(every_areas.get(area['area'], 0.0) if every_areas else None)} |"
        )
    for name, share in every_areas.items():
        if name not in shown and share >= 0.02:  # big without the GIL: native code
            lines.append(f"| {name} | {NONE} | {NONE} | {_share(share)} |")
    lines += [
        "",
        "Top functions by self samples (GIL):",
        "",
        "| function | share | µs/req |",
        "| --- | ---: | ---: |",
    ]
    for f in gil["top_self"][:20]:
        lines.append(
            f"| `{f['function']}` | {_share(f['share'])} | {_fmt(f['share'] * cpu_us, 1)} |"
        )
    lines += [
        "",
        "Top functions by inclusive samples (GIL; in the stack at all, entry-point frames "
        "left out):",
        "",
        "| function | share | µs/req |",
        "| --- | ---: | ---: |",
    ]
    for f in gil["top_inclusive"][:30]:
        lines.append(
            f"| `{f['function']}` | {_share(f['share'])} | {_fmt(f['share'] * cpu_us, 1)} |"
        )
    return lines


# --- plot --------------------------------------------------------------------------


def write_plot(summary: dict[str, Any], path: Path) -> bool:
    """Throughput and p99 against concurrency, one panel pair per worker count."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    phases = summary["phases"]
    fig, axes = plt.subplots(len(phases), 2, figsize=(11, 4.2 * len(phases)), squeeze=False)
    for row, (workers, phase) in enumerate(phases.items()):
        throughput, latency = axes[row]
        for key in PLOTTED:
            points = sorted((int(c), v) for c, v in phase["table"].get(key, {}).items())
            if not points:
                continue
            xs = [c for c, _ in points]
            throughput.plot(xs, [v["rps"] for _, v in points], marker="o", label=f"({key})")
            latency.plot(xs, [v["p99_ms"] for _, v in points], marker="o", label=f"({key})")
        for axis, title, unit in (
            (throughput, "throughput", "requests/s"),
            (latency, "p99 latency", "ms (log)"),
        ):
            axis.set_xscale("log", base=2)
            axis.set_xticks([8, 32, 128], labels=["8", "32", "128"])
            axis.set_xlabel("concurrent connections")
            axis.set_ylabel(unit)
            axis.set_title(f"{title}, {workers} worker{'s' if workers != '1' else ''}")
            axis.grid(True, alpha=0.3)
        latency.set_yscale("log")
        throughput.set_ylim(bottom=0)
        throughput.legend(fontsize=8)
    fig.suptitle(
        "(a) bare  (m) bare + model  (b) tutorial  (c) ours+JWT  (d) ours+API key  "
        "(r) ours+JWT, quota in Redis  (e) (r) + prediction log",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--before", type=Path, help="default: the newest earlier results file")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    args = parser.parse_args(argv)
    results = json.loads(args.results.read_text())
    before_path = args.before or previous_results(args.results)
    before = json.loads(before_path.read_text()) if before_path else None
    if before_path is not None:
        resolved = before_path.resolve()
        results["before"] = str(
            resolved.relative_to(ROOT) if resolved.is_relative_to(ROOT) else before_path
        )
    results["summary"] = summarize(results, before)
    write_docs(results, args.results, args.docs)
    print(console_summary(results["summary"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
