"""Drift: logged inputs and predictions against the training histograms of the manifest.

``housing-api drift`` prints :func:`format_report` and draws :func:`draw_report`; the
app keeps ``feature_drift_psi{version,feature}`` fresh with :func:`refresh_gauges`,
called by a background task every ``DRIFT_REFRESH_SECONDS`` (see
``app.lifespan``): a scrape then costs nothing, and the database is read
at a fixed pace however often Prometheus scrapes.

Live values are binned on the manifest's own edges with ``ml.histograms.bin_counts`` and
compared with ``ml.histograms.population_stability_index``, so the check cannot bin
differently from training. Only the answers callers received count (shadow rows are
another model's answers to the same inputs).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import Engine, select

from ml.histograms import bin_counts, population_stability_index
from monitoring.models import TABLE

if TYPE_CHECKING:  # not at run time: the CLI need not import scikit-learn or FastAPI
    from ml.artifacts import LoadedModel
    from monitoring.metrics import Metrics


STABLE_BELOW = 0.1
SIGNIFICANT_ABOVE = 0.25
THRESHOLDS = "PSI < 0.1 stable, 0.1-0.25 moderate, > 0.25 significant"
PREDICTION = "prediction"
# Fewer logged predictions than this say more about chance than about drift.
MIN_ROWS = 100
# The gauge looks at the newest rows of its window, at most this many per version.
GAUGE_MAX_ROWS = 50_000
MANIFEST_FILE = "manifest.json"  # ml.artifacts.MANIFEST_FILE (a test keeps them equal)

FloatArray = npt.NDArray[np.float64]


def status(psi: float) -> str:
    if psi < STABLE_BELOW:
        return "stable"
    if psi <= SIGNIFICANT_ABOVE:
        return "moderate"
    return "significant"


@dataclass(frozen=True)
class FeatureDrift:
    name: str
    kind: str  # "float", "int" or "bool" (ml.features.FeatureKind)
    edges: list[float]
    expected: list[int]  # training counts per bin
    actual: list[int]  # live counts per bin
    psi: float

    @property
    def status(self) -> str:
        return status(self.psi)


@dataclass(frozen=True)
class WidthDrift:
    """The 90 % ranges served against training's (``ml.intervals``): a range is the
    price times a constant factor, so its width moves with the prices served."""

    served_mean: float  # mean width (high - low) of the logged answers' ranges
    training_mean: float  # mean width on the training rows, from the manifest
    served_rows: int

    @property
    def ratio(self) -> float:
        return self.served_mean / self.training_mean


@dataclass(frozen=True)
class DriftReport:
    version: str
    sha256: str
    since: datetime
    rows: int
    features: list[FeatureDrift]  # the model's features in order, then "prediction"
    widths: WidthDrift | None = None  # None: no logged row carries its ranges' widths


class DriftError(Exception):
    """The manifest has no usable training histograms."""


def read_manifest(model_dir: Path, version: str) -> dict[str, Any]:
    """A version's manifest as JSON (no unpickling: drift needs only the histograms)."""
    path = model_dir / version / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DriftError(f"{path}: missing; run `housing-api train`") from exc
    except (OSError, ValueError) as exc:
        raise DriftError(f"{path}: unreadable ({exc})") from exc
    if not isinstance(manifest, dict):
        raise DriftError(f"{path}: expected a JSON object")
    return manifest


def _histograms(
    manifest: Mapping[str, Any],
) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
    """Kind per feature name (in order), training histogram per feature, and of predictions."""
    try:
        names = {str(f["name"]): str(f.get("kind", "float")) for f in manifest["features"]}
        histograms = manifest["histograms"]
        per_feature = {name: histograms["features"][name] for name in names}
        prediction = histograms["prediction"]
    except (KeyError, TypeError) as exc:
        raise DriftError(
            f"manifest of {manifest.get('version')!r} has no training histograms ({exc}); "
            "retrain with `housing-api train`"
        ) from exc
    return names, per_feature, prediction


def logged_sample(
    engine: Engine, version: str, since: datetime, *, limit: int | None = None
) -> tuple[dict[str, list[Any]], FloatArray]:
    """Inputs (column-wise) and predictions of ``version``'s answers since ``since``;
    with ``limit``, about that many of the newest (whole requests)."""
    statement = (
        select(TABLE.c.features, TABLE.c.predictions)
        .where(TABLE.c.model_version == version, TABLE.c.shadow.is_(False), TABLE.c.at >= since)
        .order_by(TABLE.c.at.desc())
    )
    columns: dict[str, list[Any]] = {}
    predictions: list[float] = []
    with engine.connect() as connection:
        result = connection.execution_options(stream_results=True, yield_per=1000).execute(
            statement
        )
        for row in result:
            for name, values in row.features.items():
                columns.setdefault(name, []).extend(values)
            predictions.extend(row.predictions)
            if limit is not None and len(predictions) >= limit:
                break
    return columns, np.array(predictions, dtype=np.float64)


def logged_widths(engine: Engine, version: str, since: datetime) -> FloatArray:
    """The widths of ``version``'s answered ranges since ``since`` (rows logged before
    ranges were served have none)."""
    statement = select(TABLE.c.interval_widths).where(
        TABLE.c.model_version == version,
        TABLE.c.shadow.is_(False),
        TABLE.c.at >= since,
        TABLE.c.interval_widths.is_not(None),
    )
    widths: list[float] = []
    with engine.connect() as connection:
        for row in connection.execution_options(stream_results=True, yield_per=1000).execute(
            statement
        ):
            widths.extend(row.interval_widths or ())
    return np.array(widths, dtype=np.float64)


def width_drift(manifest: Mapping[str, Any], widths: FloatArray) -> WidthDrift | None:
    """Served widths against the training rows' mean width, when both are known."""
    training = (manifest.get("interval") or {}).get("mean_width")
    if not len(widths) or not isinstance(training, int | float) or training <= 0:
        return None
    return WidthDrift(float(np.mean(widths)), float(training), len(widths))


def compare(
    manifest: Mapping[str, Any],
    features: Mapping[str, Sequence[Any]],
    predictions: FloatArray,
    *,
    since: datetime,
) -> DriftReport:
    """PSI per feature (and for the predictions) of a live sample against training.

    ``features`` maps each of the manifest's feature names to one value per prediction.
    """
    kinds, per_feature, prediction_histogram = _histograms(manifest)
    names = list(kinds)
    columns: dict[str, FloatArray] = {
        name: np.asarray(features.get(name, []), dtype=np.float64) for name in names
    }
    if any(len(column) != len(predictions) for column in columns.values()):
        raise ValueError("every feature needs one value per prediction")
    columns[PREDICTION] = np.asarray(predictions, dtype=np.float64)
    histograms = {**per_feature, PREDICTION: prediction_histogram}
    drifts = []
    for name in [*names, PREDICTION]:
        edges = [float(edge) for edge in histograms[name]["edges"]]
        expected = [int(count) for count in histograms[name]["counts"]]
        actual = bin_counts(columns[name], edges).tolist() if len(predictions) else []
        psi = population_stability_index(expected, actual) if len(predictions) else float("nan")
        kind = kinds.get(name, "float")
        drifts.append(FeatureDrift(name, kind, edges, expected, actual, psi))
    return DriftReport(
        version=str(manifest.get("version")),
        sha256=str(manifest.get("sha256", "")),
        since=since,
        rows=len(predictions),
        features=drifts,
    )


def format_report(report: DriftReport) -> str:
    """The table ``housing-api drift`` prints for one version."""
    since = report.since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    head = (
        f"{report.version} (model sha256 {report.sha256[:12]}…): "
        f"{report.rows:,} logged predictions since {since}"
    )
    if report.rows == 0:
        return head + "; nothing to compare."
    width = max(len(feature.name) for feature in report.features)
    lines = [head, f"  {'feature':<{width}}  {'PSI':>7}  drift"]
    lines += [
        f"  {feature.name:<{width}}  {feature.psi:>7.3f}  {feature.status}"
        for feature in report.features
    ]
    if report.widths is not None:
        w = report.widths
        lines.append(
            f"  90 % range width: served mean {w.served_mean:,.0f} over {w.served_rows:,} "
            f"answers, training {w.training_mean:,.0f} ({w.ratio:.2f}x)"
        )
    if report.rows < MIN_ROWS:
        lines.append(f"  (fewer than {MIN_ROWS} predictions: read the PSI with care)")
    return "\n".join(lines)


def _bin_labels(feature: FeatureDrift) -> list[str]:
    """The binning rule of ``ml.histograms``: two bins, one per whole value, or deciles."""
    if feature.kind == "bool":
        return ["no", "yes"]
    # The outer bins are open (ml.histograms.bin_counts): label them so.
    if feature.kind == "int":
        labels = [f"{edge + 0.5:g}" for edge in feature.edges[:-1]]
        return [f"≤{labels[0]}", *labels[1:-1], f"≥{labels[-1]}"]
    return [*(f"≤{edge:,.0f}" for edge in feature.edges[1:-1]), f">{feature.edges[-2]:,.0f}"]


def draw_report(report: DriftReport, path: Path) -> None:
    """Training vs live share per bin, side by side, one panel per feature (PNG)."""
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot
    import matplotlib.pyplot as plt

    panels = report.features
    columns = 3
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.2 * rows), squeeze=False)
    for ax, feature in zip(axes.flat, panels, strict=False):
        x = np.arange(len(feature.expected))
        expected = np.asarray(feature.expected, dtype=np.float64)
        actual = np.asarray(feature.actual or [0] * len(x), dtype=np.float64)
        ax.bar(x - 0.2, expected / max(expected.sum(), 1), width=0.4, label="training")
        ax.bar(x + 0.2, actual / max(actual.sum(), 1), width=0.4, label="live")
        ax.set_xticks(x, _bin_labels(feature), rotation=45, fontsize=7)
        ax.set_title(f"{feature.name}: PSI {feature.psi:.3f} ({feature.status})", fontsize=9)
        ax.set_ylabel("share", fontsize=8)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    since = report.since.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    figure.suptitle(
        f"Drift of {report.version}: {report.rows:,} predictions since {since} ({THRESHOLDS})",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def refresh_gauges(
    engine: Engine,
    models: Mapping[str, LoadedModel],
    metrics: Metrics,
    window: timedelta,
    *,
    now: datetime | None = None,
) -> dict[str, DriftReport]:
    """Recompute ``feature_drift_psi`` for every model in service; returns the reports.

    A version with fewer than ``MIN_ROWS`` logged answers in the window keeps its
    previous values (its sample-size gauge shows why).
    """
    since = (now or datetime.now(UTC)) - window
    reports = {}
    for version, model in models.items():
        features, predictions = logged_sample(engine, version, since, limit=GAUGE_MAX_ROWS)
        metrics.feature_drift_rows.labels(version).set(len(predictions))
        if len(predictions) < MIN_ROWS:
            continue
        report = compare(model.manifest, features, predictions, since=since)
        for feature in report.features:
            metrics.feature_drift_psi.labels(version, feature.name).set(feature.psi)
        reports[version] = report
    return reports
