"""LoadedModel.predict: checked input, compiled arithmetic, the estimator's exact answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.compose import TransformedTargetRegressor
from sklearn.ensemble import GradientBoostingRegressor, VotingRegressor
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline

from ml.artifacts import MODEL_FILE, LoadedModel, load_verified
from ml.dataset import load_dataset
from ml.features import FEATURES, MODEL_VERSIONS, ModelVersion, allowed_range
from ml.plan_compiler import compile_predictor, probe_rows
from ml.publish import save_artifacts
from tests.ml.conftest import random_rows

VERSIONS = pytest.mark.parametrize("version", MODEL_VERSIONS)


@pytest.fixture(scope="module")
def models(trained_model_dir: Path) -> dict[str, LoadedModel]:
    return {v: load_verified(trained_model_dir, v) for v in MODEL_VERSIONS}


def same_answers(ours: np.ndarray, theirs: np.ndarray) -> None:
    """Equal to the last few ulps: only the summation order of a dot product differs."""
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=0.0)


@VERSIONS
def test_identical_to_the_estimator_on_every_training_row(
    models: dict[str, LoadedModel], version: ModelVersion, data_path: Path
) -> None:
    model = models[version]
    X = load_dataset(data_path, version).X
    same_answers(model.predict(X), model.estimator.predict(X))
    for i in range(0, len(X), 7):  # one row at a time, as single requests arrive
        same_answers(model.predict(X[i : i + 1]), model.estimator.predict(X[i : i + 1]))


@VERSIONS
def test_a_row_answers_the_same_alone_or_in_any_batch(
    models: dict[str, LoadedModel], version: ModelVersion
) -> None:
    model = models[version]
    X = random_rows(version, 1000, seed=11)
    whole = model.predict(X)
    for size in (1, 2, 3, 17, 100):
        parts = np.concatenate([model.predict(X[i : i + size]) for i in range(0, len(X), size)])
        np.testing.assert_array_equal(parts, whole)


@VERSIONS
def test_identical_to_the_estimator_on_random_in_range_rows(
    models: dict[str, LoadedModel], version: ModelVersion
) -> None:
    model = models[version]
    X = random_rows(version, 2000, seed=20240601)
    same_answers(model.predict(X), model.estimator.predict(X))


@VERSIONS
def test_fixed_rows_match_the_joblib_loaded_estimator(
    models: dict[str, LoadedModel], trained_model_dir: Path, version: ModelVersion
) -> None:
    estimator = joblib.load(trained_model_dir / version / MODEL_FILE)  # trusted: our own tmp dir
    examples = [float(f.example) for f in FEATURES[version]]
    rows = np.array(
        [
            examples,
            [allowed_range(f)[0] for f in FEATURES[version]],
            [allowed_range(f)[1] for f in FEATURES[version]],
            [f.training_max for f in FEATURES[version]],
        ],
        dtype=np.float64,
    )
    prices = models[version].predict(rows)
    same_answers(prices, estimator.predict(rows))
    assert prices.dtype == np.float64
    assert prices.shape == (4,)
    assert np.all(prices > 0)
    assert 20_000 < prices[0] < 200_000  # the example house costs what such houses cost


def _parts(estimator: Any) -> list[Any]:
    """Every node the fast path is meant to replay rather than delegate."""
    found: list[Any] = []
    if isinstance(estimator, VotingRegressor):
        for member in estimator.estimators_:
            found += _parts(member)
    elif isinstance(estimator, TransformedTargetRegressor):
        found.append(estimator)
        found += _parts(estimator.regressor_)
    elif isinstance(estimator, Pipeline | GradientBoostingRegressor):
        found.append(estimator)
    return found


@VERSIONS
def test_every_part_is_actually_compiled(
    models: dict[str, LoadedModel], version: ModelVersion
) -> None:
    """Equality alone would also hold if everything silently fell back to predict."""
    parts = _parts(models[version].estimator)
    assert parts
    assert all(compile_predictor(part) is not None for part in parts)


def test_an_unrecognised_model_falls_back_to_its_own_predict(
    trained_model_dir: Path, tmp_path: Path, data_path: Path
) -> None:
    ds = load_dataset(data_path, "v1")
    # Absolute error boosts from the median with other leaf values: no plan for it.
    gbm = GradientBoostingRegressor(loss="absolute_error", n_estimators=20, random_state=0)
    gbm.fit(ds.X, ds.y)
    assert compile_predictor(gbm) is None
    manifest = load_verified(trained_model_dir, "v1").manifest
    save_artifacts(tmp_path, "v1", gbm, manifest)
    model = load_verified(tmp_path, "v1")
    assert model.predict_path == "estimator"
    np.testing.assert_array_equal(model.predict(ds.X), gbm.predict(ds.X))


def test_compiled_linear_model_matches_sklearn() -> None:
    rng = np.random.default_rng(1)
    X, y = rng.uniform(1, 10, (50, 3)), rng.uniform(1, 10, 50)
    lr = LinearRegression().fit(X, y)
    compiled = compile_predictor(lr)
    assert compiled is not None
    same_answers(compiled(X), lr.predict(X))


@VERSIONS
def test_probe_rows_cover_the_corners_and_stay_in_range(version: ModelVersion) -> None:
    rows = probe_rows(version)
    bounds = np.array([allowed_range(f) for f in FEATURES[version]], dtype=np.float64)
    assert rows.dtype == np.float64
    assert np.all(rows >= bounds[:, 0])
    assert np.all(rows <= bounds[:, 1])
    np.testing.assert_array_equal(rows[0], bounds[:, 0])
    np.testing.assert_array_equal(rows[1], bounds[:, 1])


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda row: [row.tolist()], "float64 array"),
        (lambda row: row.astype(np.float32), "float64 array"),
        (lambda row: row.ravel(), "float64 array"),
        (lambda row: row[:, :-1], "float64 array"),
        (lambda row: row[:0], "at least one row"),
        (lambda row: np.where(np.arange(row.shape[1]) == 1, np.nan, row), "NaN or infinity"),
        (lambda row: np.where(np.arange(row.shape[1]) == 0, np.inf, row), "NaN or infinity"),
        (lambda row: np.where(np.arange(row.shape[1]) == 0, 824.0, row), "lotsize outside"),
        (lambda row: np.where(np.arange(row.shape[1]) == 0, 24_301.0, row), "lotsize outside"),
        (lambda row: np.where(np.arange(row.shape[1]) == 1, -1.0, row), "bedrooms outside"),
        (lambda row: np.where(np.arange(row.shape[1]) == 5, 2.0, row), "driveway outside"),
    ],
)
def test_bad_input_is_refused_before_the_model(
    models: dict[str, LoadedModel], make: Any, problem: str
) -> None:
    row = np.array([[float(f.example) for f in FEATURES["v2"]]], dtype=np.float64)
    with pytest.raises(ValueError, match=problem):
        models["v2"].predict(make(row))
