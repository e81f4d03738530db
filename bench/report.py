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
import shutil
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


def console_summary(summary: dict[str, Any]) -> str:
    lines = ["", f"Targets (ratios at concurrency {HEADLINE_CONCURRENCY} unless noted):"]
    width = max((len(row["name"]) for row in summary["targets"]), default=58)
    for row in summary["targets"]:
        sign = ">=" if row["higher_is_better"] else "<="
        lines.append(
            f"  w{row['workers']} {row['source']:<8} {row['name']:<{width}} "
            f"{row['value']:8.2f} (aim {sign} {row['target']:g})  "
            + ("met" if row["met"] else "MISSED")
        )
    return "\n".join(lines)


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
        "- The profiles are py-spy samples of a running server (no instrumentation), shares of",
        "  the samples holding the GIL; the component table gives each part's cost alone.",
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
            "Batches, /v1/predict/batch with a JWT, against in-process predictions on the "
            "same rows (one core, no HTTP): our `LoadedModel.predict` (the compiled path the "
            "route serves) and the scikit-learn estimator's own `model.estimator.predict` "
            "(the issue's baseline):",
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
    lines += _profile_section(results.get("profile"), docs, "profile-predict.svg", cores)
    lines += _profile_section(results.get("profile_batch"), docs, "profile-batch.svg", cores)
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
    # Runs before the rename stored the same count as "round_trips_per_request".
    commands = redis.get("commands_per_request", redis.get("round_trips_per_request"))
    sent = ", ".join(f"{k} {v / n:.1f}" for k, v in redis["client_commands"].items())
    lines = [
        "",
        "## Redis: what one limiter check costs",
        "",
        f"MONITOR over {n} sequential guarded requests to (e): "
        f"**{commands:.1f} Redis commands per request** "
        f"({sent} per request); inside the scripts, per request: "
        + (
            ", ".join(f"{k} {v / n:.1f}" for k, v in redis["commands_inside_scripts"].items())
            or "none"
        )
        + ".",
        "",
        "MONITOR sees commands, not round trips, and cannot tell pipelined commands apart. "
        "The moving-window hit and the read of the same window for the quota headers go to "
        "Redis together in one pipeline (`PipelinedMovingWindow` in `app/limits.py`): two "
        "EVALSHA, one round trip. The failed-authentication throttle reads the caller "
        "address's window at most once a second per worker while it is under half used "
        "(`FailureThrottle` in `app/limits.py`), so over these sequential requests it "
        "adds at most a read per second. Round trips per request: about "
        f"**{max(commands - 1, 0):.1f}**.",
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
