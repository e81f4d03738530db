"""``housing-api predictions export`` and ``housing-api drift``: reading the prediction log."""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import Engine

from app.settings import Settings
from db.engine import UnsupportedDatabaseError
from ml.features import MODEL_VERSIONS


class Format(enum.StrEnum):
    csv = "csv"
    parquet = "parquet"


predictions = typer.Typer(help="The prediction log.", no_args_is_help=True)

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([mhd])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}

SinceOpt = Annotated[
    str | None,
    typer.Option(
        "--since",
        help="ISO 8601 date or time (UTC unless it has an offset), or a duration back "
        "from now: 30m, 24h, 7d.",
    ),
]
VersionOpt = Annotated[
    str | None, typer.Option("--version", help="Only this model version (v1, v2).")
]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=1)


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``24h``/``7d``/``30m`` before ``now``, or an ISO 8601 date/time (naive = UTC)."""
    duration = _DURATION.fullmatch(text.strip())
    if duration:
        amount, unit = float(duration.group(1)), _UNITS[duration.group(2)]
        return (now or datetime.now(UTC)) - timedelta(**{unit: amount})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--since {text!r}: give an ISO 8601 date or time, or 30m, 24h, 7d"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _since(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_since(text)
    except ValueError as exc:
        raise _fail(str(exc)) from None


def _version(text: str | None) -> str | None:
    if text is not None and text not in MODEL_VERSIONS:
        raise _fail(f"--version {text!r}: expected one of {', '.join(MODEL_VERSIONS)}")
    return text


@contextmanager
def _database(settings: Settings) -> Iterator[Engine]:
    """The service's database, its schema created first if empty (see ``migrations``)."""
    from migrations import SchemaError, prepare_schema
    from monitoring.predictionlog import make_log_engine

    try:
        engine = make_log_engine(settings.database_url)
    except UnsupportedDatabaseError as exc:
        raise _fail(str(exc)) from None
    try:
        try:
            prepare_schema(engine, production=settings.is_production)
        except SchemaError as exc:
            raise _fail(str(exc)) from None
        yield engine
    finally:
        engine.dispose()


@predictions.command("export")
def export(
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write (replaced).")],
    fmt: Annotated[Format, typer.Option("--format", help="File format.")] = Format.csv,
    since: SinceOpt = None,
    version: VersionOpt = None,
) -> None:
    """Write logged predictions (inputs, answer, model, caller, request id, time) to a file."""
    from cli.progress import progress
    from monitoring.export import export_predictions

    start, only = _since(since), _version(version)
    with _database(Settings()) as engine, progress(counted=False) as bar:
        task = bar.add_task(f"exporting to {output}", total=None)
        count = export_predictions(
            engine,
            output,
            fmt.value,
            since=start,
            version=only,
            on_rows=lambda written: bar.update(task, completed=written),
        )
        bar.update(task, total=count, completed=count)
    typer.echo(f"wrote {count:,} predictions to {output}", err=True)


def drift(
    since: SinceOpt = None,
    version: VersionOpt = None,
    png: Annotated[
        Path | None,
        typer.Option(
            "--png",
            help="Also draw training vs live histograms; with several versions, one file "
            "each (NAME-v1.png, ...).",
        ),
    ] = None,
) -> None:
    """Population stability index of logged inputs and predictions against training.

    Defaults to the last DRIFT_WINDOW_HOURS (24 h) of answers (shadow rows excluded), for
    every version with logged predictions. PSI < 0.1 stable, 0.1-0.25 moderate, > 0.25
    significant.
    """
    from cli.progress import progress
    from monitoring.drift import (
        THRESHOLDS,
        DriftError,
        compare,
        draw_report,
        format_report,
        logged_sample,
        logged_widths,
        read_manifest,
        width_drift,
    )

    settings = Settings()
    start = _since(since) or datetime.now(UTC) - timedelta(hours=settings.drift_window_hours)
    only = _version(version)
    versions = [only] if only else list(MODEL_VERSIONS)
    reports = []
    with _database(settings) as engine, progress() as bar:
        task = bar.add_task("drift", total=len(versions))
        for name in versions:
            bar.update(task, description=f"drift {name}: reading the prediction log")
            try:
                manifest = read_manifest(settings.model_dir, name)
                features, prices = logged_sample(engine, name, start)
                report = compare(manifest, features, prices, since=start)
                widths = width_drift(manifest, logged_widths(engine, name, start))
                report = dataclasses.replace(report, widths=widths)
            except DriftError as exc:
                raise _fail(str(exc)) from None
            bar.update(task, advance=1, description=f"drift {name}: {report.rows:,} predictions")
            reports.append(report)
    for report in reports:
        typer.echo(format_report(report) + "\n")
    reports = [report for report in reports if report.rows]
    typer.echo(f"Thresholds: {THRESHOLDS}.")
    if png is None:
        return
    if not reports:
        raise _fail("no logged predictions in the window: nothing to draw")
    for report in reports:
        path = png if len(reports) == 1 else png.with_name(f"{png.stem}-{report.version}.png")
        draw_report(report, path)
        typer.echo(f"wrote {path}", err=True)
