"""Turn a ``bench/results/*.json`` into ratios, targets, docs/benchmarks.md and a plot.

Run: ``python -m bench.report bench/results/<timestamp>.json`` to regenerate the docs
from a stored run (``bench.run`` calls the same functions at the end of a run).

Every ratio is the median, over repeats, of the ratio of two figures measured in the
same repeat at the same concurrency and worker count (minutes apart at most), so slow
drift of a shared machine cancels out. The plot needs matplotlib (not a dependency of
the service); without it the docs are written and the plot is skipped.
"""

from __future__ import annotations

import argparse
import json
import pstats
import re
import statistics
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PLOT_NAME = "benchmarks.png"
MATPLOTLIB_PIN = "matplotlib==3.11.2"
HEADLINE_CONCURRENCY = 32
PLOTTED = ("a", "b", "c", "d", "e")


# --- ratios and targets ------------------------------------------------------------


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


def table(runs: list[dict[str, Any]]) -> dict[str, dict[int, dict[str, float]]]:
    grouped: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        grouped[(run["scenario"], run["concurrency"])].append(run)
    out: dict[str, dict[int, dict[str, float]]] = defaultdict(dict)
    for (scenario, concurrency), group in sorted(grouped.items()):
        out[scenario][concurrency] = {
            "rps": _median(r["rps"] for r in group),
            "p50_ms": _median(r["p50_ms"] for r in group),
            "p99_ms": _median(r["p99_ms"] for r in group),
            "cpu_us_per_request": _median(r["server_cpu_us_per_request"] for r in group),
            "non_2xx": sum(r["non_2xx"] for r in group),
            "socket_errors": sum(r["socket_errors"] for r in group),
            "runs": len(group),
        }
        if scenario in ("e", "r"):
            out[scenario][concurrency]["redis_cpu_us_per_request"] = _median(
                r.get("redis_cpu_us_per_request", 0.0) for r in group
            )
    return dict(out)


# (name, source, top, bottom, metric, target or None, higher_is_better)
RATIO_SPECS: tuple[tuple[str, str, str, str, str, float | None, bool], ...] = (
    ("(c) JWT / (a) bare: throughput", "issue 9", "c", "a", "rps", 0.70, True),
    ("(d) API key / (a) bare: throughput", "issue 9", "d", "a", "rps", 0.70, True),
    ("(c) JWT / (a) bare: p99", "issue 9", "c", "a", "p99_ms", 2.0, False),
    ("(d) API key / (a) bare: p99", "issue 9", "d", "a", "p99_ms", 2.0, False),
    ("(c) JWT / (b) tutorial: throughput", "issue 9", "c", "b", "rps", 1.5, True),
    ("(e) Redis + prediction log / (c): throughput", "issue 9", "e", "c", "rps", 0.85, True),
    ("(c) JWT / (u) unauthenticated twin: throughput", "issue 8", "c", "u", "rps", 0.85, True),
    ("(d) API key / (u) unauthenticated twin: throughput", "issue 8", "d", "u", "rps", 0.85, True),
    ("(r) Redis limiter / (n) limits off: throughput", "issue 6", "r", "n", "rps", 0.85, True),
    ("(c) JWT / (a) bare: requests per CPU-second", "context", "c", "a", "per_cpu", None, True),
    ("(c) JWT / (b) tutorial: requests per CPU-second", "context", "c", "b", "per_cpu", None, True),
    (
        "(e) / (c): requests per CPU-second (Redis's CPU included)",
        "context",
        "e",
        "c",
        "per_cpu",
        None,
        True,
    ),
    ("(c) JWT / (u) twin: requests per CPU-second", "context", "c", "u", "per_cpu", None, True),
    ("(d) API key / (u) twin: requests per CPU-second", "context", "d", "u", "per_cpu", None, True),
    (
        "(r) Redis / (n) limits off: requests per CPU-second (Redis's CPU included)",
        "context",
        "r",
        "n",
        "per_cpu",
        None,
        True,
    ),
    ("(c) memory limiter / (n) limits off: throughput", "context", "c", "n", "rps", None, True),
    ("(r) Redis limiter / (c) memory limiter: throughput", "context", "r", "c", "rps", None, True),
    ("(e) prediction log on / (r) off: throughput", "context", "e", "r", "rps", None, True),
    ("(u) twin without auth / (a) bare: throughput", "context", "u", "a", "rps", None, True),
    ("(b) tutorial / (a) bare: throughput", "context", "b", "a", "rps", None, True),
)


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {"phases": {}, "targets": []}
    in_process = {row["rows"]: row for row in results.get("in_process", [])}
    for phase in results.get("phases", []):
        workers = phase["workers"]
        runs = phase["runs"]
        concurrencies = sorted({r["concurrency"] for r in runs})
        ratios = []
        for name, source, top, bottom, metric, target, higher in RATIO_SPECS:
            for concurrency in concurrencies:
                value = paired_ratio(runs, top, bottom, concurrency, metric)
                met = None if target is None else (value >= target if higher else value <= target)
                ratios.append(
                    {
                        "name": name,
                        "source": source,
                        "concurrency": concurrency,
                        "value": value,
                        "target": target,
                        "higher_is_better": higher,
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
            batches[rows] = {
                "rows_per_s": rows_per_s,
                "rps": _median(r["rps"] for r in group),
                "p50_ms": _median(r["p50_ms"] for r in group),
                "p99_ms": _median(r["p99_ms"] for r in group),
                "cpu_us_per_request": _median(r["server_cpu_us_per_request"] for r in group),
                "non_2xx": sum(r["non_2xx"] for r in group),
                "in_process_rows_per_s": reference or float("nan"),
                "ratio_to_in_process": rows_per_s / reference if reference else float("nan"),
            }
        rss = {
            name: max(values) if values else None for name, values in phase["peak_rss_mb"].items()
        }
        summary["phases"][str(workers)] = {
            "table": table(runs),
            "ratios": ratios,
            "batches": batches,
            "peak_rss_mb": rss,
            "redis": phase.get("redis"),
        }
    summary["targets"] = _targets(summary)
    return summary


def _find(ratios: list[dict[str, Any]], name: str, concurrency: int) -> dict[str, Any] | None:
    return next((r for r in ratios if r["name"] == name and r["concurrency"] == concurrency), None)


def _targets(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per target and worker count, at the headline concurrency (32)."""
    rows = []
    for workers, phase in summary["phases"].items():
        for spec in RATIO_SPECS:
            found = _find(phase["ratios"], spec[0], HEADLINE_CONCURRENCY)
            if found and spec[5] is not None:
                rows.append({**found, "workers": int(workers)})
        batch = phase["batches"].get(1000) or phase["batches"].get("1000")
        if batch:
            rows.append(
                {
                    "name": "batch 1000 rows/s / in-process LoadedModel.predict rows/s",
                    "source": "issue 9",
                    "concurrency": 8,
                    "value": batch["ratio_to_in_process"],
                    "target": 0.5,
                    "higher_is_better": True,
                    "met": batch["ratio_to_in_process"] >= 0.5,
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


def console_summary(summary: dict[str, Any]) -> str:
    lines = ["", f"Targets (ratios at concurrency {HEADLINE_CONCURRENCY} unless noted):"]
    for row in summary["targets"]:
        sign = ">=" if row["higher_is_better"] else "<="
        lines.append(
            f"  w{row['workers']} {row['source']:<8} {row['name']:<58} "
            f"{row['value']:8.2f} (aim {sign} {row['target']:g})  "
            + ("met" if row["met"] else "MISSED")
        )
    return "\n".join(lines)


# --- profile -----------------------------------------------------------------------

_OBJECT = re.compile(r"of '([\w.]+)' objects")
# Our packages, in the working tree or in a run's snapshot of it (not site-packages).
_OURS = re.compile(r"/(app|auth|ml|cli|bench)/[^/]+(?:/[^/]+)*\.py$")


def _area(file: str, func: str) -> str:
    """Which package a profiled function belongs to, for the flame summary."""
    if file == "~":
        match = _OBJECT.search(func)
        if match:
            owner = match.group(1).split(".")[0]
            return f"{owner} (C)"
        return "builtins (C)"
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


def _label(key: tuple[str, int, str]) -> str:
    file, line, func = key
    if file == "~":
        return func
    path = file.replace("\\", "/")
    ours = _OURS.search(path)
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    elif ours:
        path = path[ours.start() + 1 :]
    else:
        path = path.rsplit("/", 1)[-1]
    return f"{path}:{line}({func})"


ROUTES_FILE = "app/routes/predict.py"


def profile_summary(
    path: Path, endpoint: str, fallback_requests: int, top: int = 25
) -> dict[str, Any]:
    """Shares and µs per request; requests are the profiled calls of ``endpoint``."""
    stats = pstats.Stats(str(path))
    entries: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    calls = [
        nc
        for (file, _, func), (_, nc, _, _, _) in entries.items()
        if func == endpoint and file.replace("\\", "/").endswith(ROUTES_FILE)
    ]
    requests = max(calls) if calls else fallback_requests
    total = sum(tt for (_, _, tt, _, _) in entries.values())
    per_request = 1e6 / max(1, requests)
    areas: dict[str, float] = defaultdict(float)
    for (file, _line, func), (_, _, tt, _, _) in entries.items():
        areas[_area(file, func)] += tt
    by_self = sorted(entries.items(), key=lambda item: item[1][2], reverse=True)[:top]
    by_cumulative = sorted(entries.items(), key=lambda item: item[1][3], reverse=True)
    return {
        "requests": requests,
        "total_cpu_s": total,
        "cpu_us_per_request": total * per_request,
        "areas": [
            {"area": area, "share": tt / total, "us_per_request": tt * per_request}
            for area, tt in sorted(areas.items(), key=lambda item: item[1], reverse=True)
        ],
        "top_self": [
            {
                "function": _label(key),
                "calls_per_request": nc / max(1, requests),
                "self_share": tt / total,
                "self_us_per_request": tt * per_request,
                "cumulative_us_per_request": ct * per_request,
            }
            for key, (_, nc, tt, ct, _) in by_self
        ],
        "top_cumulative": [
            {
                "function": _label(key),
                "calls_per_request": nc / max(1, requests),
                "cumulative_share": ct / total,
                "cumulative_us_per_request": ct * per_request,
            }
            for key, (_, nc, _, ct, _) in by_cumulative[: top * 2]
        ],
    }


# --- docs --------------------------------------------------------------------------


NONE = "n/a"


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None or value != value:  # NaN
        return NONE
    return f"{value:,.{digits}f}"


def _target_rows(summary: dict[str, Any]) -> list[str]:
    lines = [
        "| workers | source | ratio | concurrency | value | aim | met |",
        "| ---: | --- | --- | ---: | ---: | ---: | --- |",
    ]
    for row in sorted(summary["targets"], key=lambda r: (r["source"], r["workers"])):
        sign = "≥" if row["higher_is_better"] else "≤"
        if row["name"].startswith("peak RSS"):
            sign = "<"
        lines.append(
            f"| {row['workers']} | {row['source']} | {row['name']} | "
            f"{row['concurrency'] if row['concurrency'] is not None else NONE} | "
            f"{row['value']:.2f} | {sign} {row['target']:g} | {'yes' if row['met'] else '**no**'} |"
        )
    return lines


def write_docs(results: dict[str, Any], source: Path, docs: Path) -> None:
    summary = results["summary"]
    scenarios: dict[str, str] = results["settings"]["scenarios"]
    env = results["environment"]
    settings = results["settings"]
    docs.mkdir(parents=True, exist_ok=True)
    plotted = write_plot(summary, docs / PLOT_NAME)
    try:
        shown_source = source.resolve().relative_to(ROOT)
    except ValueError:
        shown_source = source
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `bench/report.py` from `{shown_source}` "
        f"(run started {results['started_at']}, {results['elapsed_s'] / 60:.1f} min). "
        "Do not edit by hand: run `make bench` again.",
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
        f"-c{settings['batch_concurrency']}.",
        "- Servers: ours is `housing-api serve --workers N` (uvicorn with uvloop and "
        "httptools for 1 worker, gunicorn with uvicorn workers for 2); the baselines run from "
        "factories in `bench/baselines/` with the same server flags (`bench/servers.py`). Ours "
        "and its twins write the app's JSON log event and metrics for every request; the "
        "baselines (a) and (b) log nothing per request. The prediction log "
        "(`PREDICTION_LOG_ENABLED`) is on in (e) only.",
        "- Settings: "
        + ", ".join(f"`{k}={v}`" for k, v in settings["server_env"].items())
        + " (limits are checked on every request but never reached; load shedding never "
        "triggers, so every answer is a 200).",
        "",
        "Scenarios:",
        "",
    ]
    lines += [f"- **({key})** {label}" for key, label in scenarios.items()]
    lines += [
        "",
        "Reading the numbers:",
        "",
        "- Wall-clock ratios swing by ±30 % between runs on this machine (p99 ratios more);",
        "  the *requests per CPU-second* rows (server CPU, plus Redis's for (e) and (r)) are",
        "  the steadier measure of what each guard costs, and what a saturated server's",
        "  throughput ratio would be.",
        "- `RATE_LIMIT_PREDICT` is huge so that no request is refused; with one caller the",
        "  moving window then holds every hit of the last minute (tens of thousands of",
        "  entries), which makes Redis's window-stats script longer than under a real plan's",
        "  limit (see the component table).",
        "- cProfile inflates Python-heavy code about 4x: use the profiles for shares and call",
        "  counts, the component table for real costs.",
        "- [scaling.md](scaling.md) turns these figures into a capacity plan.",
    ]
    lines += ["", "## Targets", "", f"At concurrency {HEADLINE_CONCURRENCY} unless noted.", ""]
    lines += _target_rows(summary)
    lines += [
        "",
        'All ratios at every concurrency (✗: aim missed; "context" rows have no aim):',
        "",
    ]
    concurrencies = settings["concurrency"]
    lines.append("| workers | ratio | aim | " + " | ".join(f"c={c}" for c in concurrencies) + " |")
    lines.append("| ---: | --- | ---: |" + " ---: |" * len(concurrencies))
    for workers, phase in summary["phases"].items():
        for spec in RATIO_SPECS:
            name, target, higher = spec[0], spec[5], spec[6]
            cells = []
            for c in concurrencies:
                found = _find(phase["ratios"], name, c)
                cells.append(
                    NONE
                    if found is None
                    else (f"{found['value']:.2f}" + (" ✗" if found["met"] is False else ""))
                )
            aim = NONE if target is None else f"{'≥' if higher else '≤'} {target:g}"
            lines.append(f"| {workers} | {name} | {aim} | " + " | ".join(cells) + " |")
    for workers, phase in summary["phases"].items():
        lines += [
            "",
            f"## {workers} worker{'s' if workers != '1' else ''}: requests/s, latency, "
            "server CPU per request",
            "",
            "| scenario | C | req/s | p50 ms | p99 ms | server CPU µs/req | non-2xx |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for key in scenarios:
            for c, row in sorted(phase["table"].get(key, {}).items(), key=lambda kv: int(kv[0])):
                cpu = _fmt(row["cpu_us_per_request"])
                if "redis_cpu_us_per_request" in row:
                    cpu += f" (+ Redis {_fmt(row['redis_cpu_us_per_request'])})"
                lines.append(
                    f"| ({key}) | {c} | {_fmt(row['rps'])} | {_fmt(row['p50_ms'], 2)} | "
                    f"{_fmt(row['p99_ms'], 2)} | {cpu} | {row['non_2xx']} |"
                )
        lines += [
            "",
            "Batches, /v1/predict/batch with a JWT, against in-process "
            "`LoadedModel.predict` on the same rows (one core, no HTTP):",
            "",
            "| rows | req/s | rows/s | p50 ms | p99 ms | server CPU µs/req "
            "| in-process rows/s | ratio |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for rows, b in phase["batches"].items():
            lines.append(
                f"| {rows} | {_fmt(b['rps'])} | {_fmt(b['rows_per_s'])} | {_fmt(b['p50_ms'], 2)} | "
                f"{_fmt(b['p99_ms'], 2)} | {_fmt(b['cpu_us_per_request'])} | "
                f"{_fmt(b['in_process_rows_per_s'])} | {b['ratio_to_in_process']:.3f} |"
            )
        lines += ["", "Peak RSS per worker (VmHWM, MiB, the largest worker of each server):", ""]
        lines.append("| server | MiB |")
        lines.append("| --- | ---: |")
        for name, mb in phase["peak_rss_mb"].items():
            lines.append(f"| {name} | {_fmt(mb, 1)} |")
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
    lines += _profile_section(results.get("profile"))
    lines += _profile_section(results.get("profile_batch"))
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


WINDOWS = {
    "short_window": "a realistic window (600/minute, 300 entries)",
    "long_window": "the benchmark's window (100000000/minute, 20,000 entries)",
}


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
        row(f"part `{name}` ({part['inner']}), 1 row, as served", part.get("predict_1_row_us"))
        row(
            f"part `{name}`: scikit-learn's `predict_stages` without input validation",
            part.get("direct_predict_stages_1_row_us"),
        )
        vec = part.get("vectorized_trees")
        if vec:
            row(
                f"part `{name}`: all trees walked at once in NumPy, 1 row "
                f"(identical answers on probe rows: {vec['identical_on_probe_rows']})",
                vec["predict_1_row_us"],
            )
            row(f"part `{name}`: the same, 1000 rows", vec["predict_1000_rows_us"])
            row(f"part `{name}`: scikit-learn, 1000 rows", vec["sklearn_predict_1000_rows_us"])
    limiter = components.get("limiter", {})
    for key, value in limiter.items():
        if key.endswith("_us"):
            store, _, window = key.removesuffix("_us").partition("_")
            row(
                f"limiter per request ({store}, {window.replace('_', ' ')}: "
                "failed-auth test + hit + window stats)",
                value,
            )
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
    sent = ", ".join(f"{k} {v / n:.1f}" for k, v in redis["client_commands"].items())
    lines = [
        "",
        "## Redis: what one limiter check costs",
        "",
        f"MONITOR over {redis['requests']} sequential guarded requests to (e): "
        f"**{redis['round_trips_per_request']:.1f} round trips per request** "
        f"({sent} per request); inside the scripts, per request: "
        + (
            ", ".join(
                f"{k} {v / redis['requests']:.1f}"
                for k, v in redis["commands_inside_scripts"].items()
            )
            or "none"
        )
        + ".",
        "",
        "| command | calls | µs in Redis per call |",
        "| --- | ---: | ---: |",
    ]
    for name, stat in sorted(redis["commandstats_delta"].items()):
        lines.append(f"| {name} | {stat['calls']} | {stat['usec'] / max(1, stat['calls']):.1f} |")
    return lines


def _profile_section(profile: dict[str, Any] | None) -> list[str]:
    if not profile:
        return []
    lines = [
        "",
        f"## Profile: {profile.get('path', '/v1/predict')} with a JWT, 1 worker, "
        f"concurrency {profile.get('concurrency', 32)}",
        "",
        "cProfile in every thread, timed with `time.thread_time` (CPU, not waiting) via "
        "`bench/baselines/profiled.py`; deterministic profiling inflates many small Python "
        f"calls, so read the shares. {profile['requests']:,} requests, "
        f"{profile['cpu_us_per_request']:.0f} µs of profiled CPU per request.",
        "",
        "By package (self time):",
        "",
        "| package | share | µs/request |",
        "| --- | ---: | ---: |",
    ]
    for area in profile["areas"][:18]:
        lines.append(
            f"| {area['area']} | {100 * area['share']:.1f} % | {area['us_per_request']:.1f} |"
        )
    lines += [
        "",
        "Top functions by self time:",
        "",
        "| function | calls/request | self share | self µs/req | cumulative µs/req |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for f in profile["top_self"][:20]:
        lines.append(
            f"| `{f['function']}` | {f['calls_per_request']:.2f} | {100 * f['self_share']:.1f} % | "
            f"{f['self_us_per_request']:.1f} | {f['cumulative_us_per_request']:.1f} |"
        )
    lines += [
        "",
        "Top functions by cumulative time:",
        "",
        "| function | calls/request | cumulative share | cumulative µs/req |",
        "| --- | ---: | ---: | ---: |",
    ]
    for f in profile["top_cumulative"][:30]:
        lines.append(
            f"| `{f['function']}` | {f['calls_per_request']:.2f} | "
            f"{100 * f['cumulative_share']:.1f} % | {f['cumulative_us_per_request']:.1f} |"
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
        "(a) bare  (b) tutorial  (c) ours+JWT  (d) ours+API key  "
        "(e) ours+JWT+Redis limiter+prediction log",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    args = parser.parse_args(argv)
    results = json.loads(args.results.read_text())
    results["summary"] = summarize(results)
    write_docs(results, args.results, args.docs)
    print(console_summary(results["summary"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
