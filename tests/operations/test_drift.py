"""Drift: PSI per feature against the manifest's training histograms, as a table, a PNG
and a gauge. A sample drawn from the training data is stable; a lot-size shift is not."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine
from typer.testing import CliRunner

import ml.artifacts
from app.main import create_app
from app.settings import Settings
from cli.main import app as cli_app
from migrations import upgrade_schema
from ml.artifacts import LoadedModel, load_verified
from ml.dataset import load_dataset
from ml.features import FEATURES, allowed_range
from monitoring import drift
from monitoring.metrics import Metrics
from monitoring.predictionlog import PredictionBatch, PredictionLogWriter
from tests.conftest import DATA_PATH
from tests.operations.conftest import http

pytestmark = pytest.mark.anyio

SAMPLE = 1000
LOT_SHIFT = 1.6  # lots 60% larger, as if a new rural market started calling


def sample(version: str, *, seed: int, lot_shift: float = 1.0) -> dict[str, list[Any]]:
    """``SAMPLE`` rows drawn (with replacement) from the training data, column-wise,
    lot sizes multiplied by ``lot_shift`` (within the accepted range)."""
    dataset = load_dataset(DATA_PATH, version)  # type: ignore[arg-type]
    rows = dataset.X[np.random.default_rng(seed).integers(0, len(dataset.X), SAMPLE)]
    columns: dict[str, list[Any]] = {}
    for j, feature in enumerate(FEATURES[version]):  # type: ignore[index]
        values = rows[:, j]
        if feature.name == "lotsize":
            values = np.minimum(values * lot_shift, allowed_range(feature)[1])
        cast = {"bool": bool, "int": int, "float": float}[feature.kind]
        columns[feature.name] = [cast(v) for v in values]
    return columns


def predict(model: LoadedModel, columns: dict[str, list[Any]]) -> np.ndarray:
    X = np.array([columns[name] for name in model.feature_names], dtype=np.float64).T
    return model.predict(np.ascontiguousarray(X))


def psi_by_feature(report: drift.DriftReport) -> dict[str, float]:
    return {f.name: f.psi for f in report.features}


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_a_sample_drawn_from_the_training_data_is_stable(model_dir: Path, version: str) -> None:
    model = load_verified(model_dir, version)  # type: ignore[arg-type]
    columns = sample(version, seed=1)
    report = drift.compare(
        model.manifest, columns, predict(model, columns), since=datetime.now(UTC)
    )
    assert report.rows == SAMPLE
    assert [f.name for f in report.features] == [*model.feature_names, "prediction"]
    assert {f.name: f.status for f in report.features} == {
        name: "stable" for name in [*model.feature_names, "prediction"]
    }, psi_by_feature(report)


def test_a_lot_size_shift_is_flagged_and_only_there(model_dir: Path) -> None:
    model = load_verified(model_dir, "v1")
    columns = sample("v1", seed=2, lot_shift=LOT_SHIFT)
    report = drift.compare(
        model.manifest, columns, predict(model, columns), since=datetime.now(UTC)
    )
    psi = psi_by_feature(report)
    assert psi["lotsize"] > drift.SIGNIFICANT_ABOVE
    assert {f.name for f in report.features if f.status == "stable"} == {
        "bedrooms",
        "bathrms",
        "stories",
        "garagepl",
    }, psi


def test_thresholds() -> None:
    assert [drift.status(x) for x in (0.0, 0.099, 0.1, 0.25, 0.2501, 3.0)] == [
        "stable",
        "stable",
        "moderate",
        "moderate",
        "significant",
        "significant",
    ]
    assert drift.MANIFEST_FILE == ml.artifacts.MANIFEST_FILE


def tables_of(stdout: str) -> dict[str, dict[str, str]]:
    """``{version: {feature: status}}`` from the drift command's tables."""
    tables: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in stdout.splitlines():
        words = line.split()
        if line.startswith(("v1 (", "v2 (")):
            current = tables.setdefault(words[0], {})
        elif len(words) == 3 and words[0] != "feature":
            current[words[0]] = words[2]
    return {version: table for version, table in tables.items() if table}


def log_sample(engine: Engine, model: LoadedModel, columns: dict[str, list[Any]]) -> None:
    upgrade_schema(engine)
    writer = PredictionLogWriter(engine, Metrics())
    writer.start()
    for start in range(0, SAMPLE, 100):  # as 10 batch requests
        part = {name: values[start : start + 100] for name, values in columns.items()}
        prices = [float(p) for p in predict(model, part)]
        low, high = model.interval_bounds(np.asarray(prices))
        widths = (high - low).tolist()  # as the prediction route logs them
        writer.submit(PredictionBatch(time.time(), None, None, model, part, prices, (), widths))
    writer.close()


def test_the_drift_command_prints_psi_per_feature_and_draws_the_histograms(
    settings: Settings, log_engine: Engine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    v1 = load_verified(settings.model_dir, "v1")
    v2 = load_verified(settings.model_dir, "v2")
    log_sample(log_engine, v1, sample("v1", seed=3, lot_shift=LOT_SHIFT))
    log_sample(log_engine, v2, sample("v2", seed=4))
    for name, value in {
        "VAR_DIR": settings.var_dir,
        "DATABASE_URL": settings.database_url,
        "MODEL_DIR": settings.model_dir,
    }.items():
        monkeypatch.setenv(name, str(value))

    result = CliRunner().invoke(cli_app, ["drift", "--png", str(tmp_path / "drift.png")])
    assert result.exit_code == 0, result.output
    tables = tables_of(result.stdout)
    assert set(tables) == {"v1", "v2"}
    assert tables["v1"]["lotsize"] == "significant"
    assert {name for name, status in tables["v1"].items() if status == "stable"} == {
        "bedrooms",
        "bathrms",
        "stories",
        "garagepl",
    }
    assert set(tables["v2"].values()) == {"stable"}
    assert len(tables["v2"]) == 12  # 11 features and the prediction
    assert result.stdout.count("1,000 logged predictions") == 2
    assert "PSI < 0.1 stable, 0.1-0.25 moderate, > 0.25 significant" in result.stdout
    # Served ranges against training's: wider where the lot sizes (and prices) grew.
    ratios = dict(
        re.findall(
            r"^(v\d) .*?\n(?:.*\n)*?  90 % range width: .*\(([\d.]+)x\)", result.stdout, re.M
        )
    )
    assert float(ratios["v1"]) > 1.05
    assert 0.85 < float(ratios["v2"]) < 1.15
    for version in ("v1", "v2"):
        png = tmp_path / f"drift-{version}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    only_v2 = CliRunner().invoke(cli_app, ["drift", "--version", "v2", "--since", "1h"])
    assert only_v2.exit_code == 0, only_v2.output
    assert set(tables_of(only_v2.stdout)) == {"v2"}
    nothing = CliRunner().invoke(cli_app, ["drift", "--since", "2999-01-01"])
    assert "0 logged predictions" in nothing.stdout


async def test_metrics_carry_a_drift_gauge_per_feature(
    make_settings: Callable[..., Settings],
) -> None:
    app = create_app(make_settings(drift_refresh_seconds=0.2))
    columns = sample("v1", seed=5, lot_shift=LOT_SHIFT)
    houses = [
        dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)
    ]
    async with app.router.lifespan_context(app):
        store = app.state.services.store
        async with http(
            app, **{"X-API-Key": store.api_keys.create("p", "predict metrics")[1]}
        ) as client:
            answer = await client.post("/v1/predict/batch", json={"instances": houses})
            assert answer.status_code == 200, answer.text

            async def gauges() -> dict[str, float]:
                text = (await client.get("/metrics")).text
                return {
                    s.labels["feature"]: s.value
                    for family in text_string_to_metric_families(text)
                    for s in family.samples
                    if s.name == "feature_drift_psi" and s.labels["version"] == "v1"
                }

            deadline = time.monotonic() + 10
            while "lotsize" not in (current := await gauges()):
                assert time.monotonic() < deadline, "the drift gauge was never refreshed"
                await anyio.sleep(0.1)
    assert current["lotsize"] > drift.SIGNIFICANT_ABOVE
    assert current["bedrooms"] < drift.STABLE_BELOW
    assert set(current) == {"lotsize", "bedrooms", "bathrms", "stories", "garagepl", "prediction"}


def test_refresh_keeps_quiet_below_the_minimum_sample(
    settings: Settings, log_engine: Engine
) -> None:
    upgrade_schema(log_engine)
    v1 = load_verified(settings.model_dir, "v1")
    metrics = Metrics()
    reports = drift.refresh_gauges(log_engine, {"v1": v1}, metrics, timedelta(hours=1))
    assert reports == {}
    text = metrics.exposition().decode()
    assert 'feature_drift_sample_rows{version="v1"} 0.0' in text
    assert "feature_drift_psi{" not in text
