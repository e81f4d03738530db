"""Prediction plans: scikit-learn's answers without scikit-learn, refused when not exactly ours."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.ensemble import GradientBoostingRegressor

from ml.artifacts import (
    MANIFEST_FILE,
    MODEL_FILE,
    PLAN_FILE,
    ArtifactError,
    LoadedModel,
    load_verified,
)
from ml.candidates import CANDIDATES
from ml.dataset import load_dataset
from ml.features import MODEL_VERSIONS, ModelVersion
from ml.plan import (
    _ROW_CHUNK,
    _SMALL_BATCH,
    MAX_TREE_DEPTH,
    PLAN_FORMAT,
    PlanError,
    _floor32,
    load_plan,
    plan_to_json,
    probe_rows,
)
from ml.plan_compiler import plan_for
from ml.publish import save_artifacts
from tests.ml.conftest import random_rows

REPO_ROOT = Path(__file__).resolve().parents[2]
VERSIONS = pytest.mark.parametrize("version", MODEL_VERSIONS)


@pytest.fixture(scope="module")
def models(trained_model_dir: Path) -> dict[str, LoadedModel]:
    return {v: load_verified(trained_model_dir, v) for v in MODEL_VERSIONS}


def _rows(version: ModelVersion, data_path: Path) -> dict[str, np.ndarray]:
    return {
        "probe": probe_rows(version),
        "training": load_dataset(data_path, version).X,
        "random": random_rows(version, 3000, seed=7),  # more than one row chunk
    }


def _one_by_one(predict: Any, X: np.ndarray) -> np.ndarray:
    return np.concatenate([predict(X[i : i + 1]) for i in range(len(X))])


# --- the answers -----------------------------------------------------------------------


@VERSIONS
def test_served_by_the_plan_with_the_estimators_answers(
    models: dict[str, LoadedModel], version: ModelVersion, data_path: Path
) -> None:
    model = models[version]
    assert model.predict_path == "compiled"
    assert model._estimator is None  # nothing unpickled to serve
    for X in _rows(version, data_path).values():
        # Linear parts sum their dot product row-wise, sklearn's BLAS otherwise.
        np.testing.assert_allclose(model.predict(X), model.estimator.predict(X), rtol=1e-12, atol=0)


def test_boosted_trees_are_bit_for_bit_sklearns(
    models: dict[str, LoadedModel], data_path: Path
) -> None:
    estimator = models["v1"].estimator
    [boosted] = [
        p for p in estimator.estimators_ if type(p.regressor_) is GradientBoostingRegressor
    ]
    plan = plan_for(boosted)
    assert plan is not None
    predict = load_plan(plan_to_json(plan))
    for X in _rows("v1", data_path).values():
        np.testing.assert_array_equal(predict(X), boosted.predict(X))
        np.testing.assert_array_equal(predict(X), _one_by_one(predict, X))


@VERSIONS
def test_a_row_answers_the_same_alone_or_in_any_batch(
    models: dict[str, LoadedModel], version: ModelVersion
) -> None:
    """Both batch strategies (all trees at once, trees in blocks) and the row chunks."""
    model = models[version]
    X = random_rows(version, _ROW_CHUNK + 300, seed=11)
    whole = model.predict(X)
    np.testing.assert_array_equal(_one_by_one(model.predict, X[:300]), whole[:300])
    for size in (2, _SMALL_BATCH, _SMALL_BATCH + 1, 1000):
        parts = np.concatenate([model.predict(X[i : i + size]) for i in range(0, len(X), size)])
        np.testing.assert_array_equal(parts, whole)


@pytest.mark.parametrize("candidate", CANDIDATES, ids=lambda c: c.name)
def test_every_candidate_gets_an_exact_plan_or_none(candidate: Any, data_path: Path) -> None:
    """Stumps, depth 3, raw price, averages: whatever training may choose. A candidate
    declares whether it compiles (``plan``), and only those may be chosen."""
    ds = load_dataset(data_path, "v2")
    estimator = candidate.build(0, 0, ds.X.shape[1]).fit(ds.X, ds.y)
    plan = plan_for(estimator)
    if not candidate.plan:
        # SplineTransformer, PolynomialFeatures and histogram boosting are not replayed
        assert plan is None
        return
    assert plan is not None
    predict = load_plan(plan_to_json(plan), n_features=ds.X.shape[1])
    X = np.vstack([ds.X, probe_rows("v2")])
    ours, theirs = predict(X), estimator.predict(X)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=0)
    if "gbm" in candidate.name and "avg" not in candidate.name:
        np.testing.assert_array_equal(ours, theirs)


def test_unsupported_boosting_gets_no_plan(data_path: Path) -> None:
    ds = load_dataset(data_path, "v1")
    for params in ({"loss": "absolute_error"}, {"max_depth": MAX_TREE_DEPTH + 1}):
        gbm = GradientBoostingRegressor(n_estimators=5, random_state=0, **params).fit(ds.X, ds.y)
        assert plan_for(gbm) is None


def test_float32_floor_compares_as_sklearns_double_comparison() -> None:
    """``x32 > floor32(t)`` exactly when ``float64(x32) > t``, at and around each threshold."""
    rng = np.random.default_rng(0)
    t = np.concatenate([rng.uniform(-1e4, 1e4, 10_000), [1e300, -1e300, 0.5, 4505.0, 2.5]])
    with np.errstate(over="ignore"):
        near = t.astype(np.float32)
    up, down = np.float32(np.inf), np.float32(-np.inf)
    floor = _floor32(t)
    for x in (near, np.nextafter(near, up), np.nextafter(near, down), near[::-1]):
        np.testing.assert_array_equal(x > floor, x.astype(np.float64) > t)


# --- serving without scikit-learn ----------------------------------------------------------


def test_serving_workers_never_import_sklearn(trained_model_dir: Path, tmp_path: Path) -> None:
    script = """
import asyncio, json, sys
from pathlib import Path
import numpy as np
from app.main import create_app
from app.settings import Settings

settings = Settings(_env_file=None, app_env="development", var_dir=Path(sys.argv[2]),
                    model_dir=Path(sys.argv[1]), redis_url=None)
app = create_app(settings)

async def serve() -> list[list[float]]:
    async with app.router.lifespan_context(app):
        model = app.state.services.models["v1"]
        assert model.predict_path == "compiled"
        prices, low, high = model.predict_interval(np.array([[5850.0, 3, 1, 2, 1]]))
        return [prices.tolist(), low.tolist(), high.tolist()]

prices, low, high = asyncio.run(serve())
print(json.dumps({"prices": prices, "low": low, "high": high,
                  "loaded": [m for m in ("sklearn", "joblib", "scipy") if m in sys.modules]}))
"""
    done = subprocess.run(
        [sys.executable, "-c", script, str(trained_model_dir), str(tmp_path / "var")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["loaded"] == []
    reference = load_verified(trained_model_dir, "v1").estimator.predict(
        np.array([[5850.0, 3, 1, 2, 1]])
    )
    np.testing.assert_allclose(out["prices"], reference, rtol=1e-12, atol=0)
    assert out["low"][0] < out["prices"][0] < out["high"][0]  # the range is NumPy too


def test_the_estimator_is_unpickled_on_first_use_after_its_hash(model_copy: Path) -> None:
    model = load_verified(model_copy, "v1")
    path = model_copy / "v1" / MODEL_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    model.predict(probe_rows("v1"))  # the plan needs no pickle
    with pytest.raises(ArtifactError, match=f"{path}.*does not match"):
        model.estimator  # noqa: B018


# --- refusing what is not ours --------------------------------------------------------------


def _manifest(model_dir: Path, version: str) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((model_dir / version / MANIFEST_FILE).read_text())
    return manifest


def _write_plan(model_dir: Path, version: str, data: bytes, *, record: bool = True) -> Path:
    """Replace plan.json; with ``record``, its sha256 in the manifest too (consistently)."""
    path = model_dir / version / PLAN_FILE
    path.write_bytes(data)
    if record:
        manifest = _manifest(model_dir, version)
        manifest["plan"]["sha256"] = hashlib.sha256(data).hexdigest()
        (model_dir / version / MANIFEST_FILE).write_text(json.dumps(manifest))
    return path


def _plan(model_dir: Path, version: str) -> dict[str, Any]:
    plan: dict[str, Any] = json.loads((model_dir / version / PLAN_FILE).read_bytes())
    return plan


def _gbm_tree(plan: dict[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = plan["predict"]["parts"][1]["inner"]["trees"][0]
    return tree


def test_a_changed_number_is_refused_by_the_hash(model_copy: Path) -> None:
    plan = _plan(model_copy, "v1")
    _gbm_tree(plan)["value"][2] += 0.5
    path = _write_plan(model_copy, "v1", plan_to_json(plan), record=False)
    with pytest.raises(ArtifactError, match=f"{path}.*does not match"):
        load_verified(model_copy, "v1")


@pytest.mark.parametrize("version", MODEL_VERSIONS)
def test_a_consistently_tampered_plan_is_refused_by_the_probe_rows(
    model_copy: Path, version: ModelVersion
) -> None:
    plan = _plan(model_copy, version)
    if version == "v1":
        _gbm_tree(plan)["value"][2] += 0.01
    else:
        plan["predict"]["inner"]["final"]["coef"][0] *= 1.000001
    path = _write_plan(model_copy, version, plan_to_json(plan))
    with pytest.raises(ArtifactError, match=f"{path}.*answers the probe rows differently"):
        load_verified(model_copy, version)


def _set(plan: dict[str, Any], change: str) -> bytes:
    tree = _gbm_tree(plan)
    if change == "unknown op":
        plan["predict"]["parts"][0]["op"] = "eval"
    elif change == "child out of range":
        tree["left"][0] = len(tree["left"])
    elif change == "cycle":
        tree["left"][1] = 0
    elif change == "feature out of range":
        tree["feature"][0] = 5
    elif change == "bool for an int":
        tree["feature"][0] = True
    elif change == "wrong length":
        tree["value"].pop()
    elif change == "extra key":
        plan["predict"]["code"] = "import os"
    elif change == "n_features":
        plan["n_features"] = 11
    elif change == "coef shape":
        plan["predict"]["parts"][0]["inner"]["final"]["coef"].append(1.0)
    return plan_to_json(plan)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ("unknown op", "unknown predictor op 'eval'"),
        ("child out of range", r"trees\[0\]\.left\[0\]"),
        ("cycle", r"trees\[0\]: node 1 has children 0"),
        ("feature out of range", r"trees\[0\]\.feature\[0\]"),
        ("bool for an int", r"feature\[0\]: expected an integer"),
        ("wrong length", r"trees\[0\]\.value: expected a list of"),
        ("extra key", "keys"),
        ("n_features", "n_features: 11, expected 5"),
        ("coef shape", r"coef: expected a list of 5 to 5"),
    ],
)
def test_a_malformed_plan_is_refused_naming_the_file(
    model_copy: Path, change: str, problem: str
) -> None:
    path = _write_plan(model_copy, "v1", _set(_plan(model_copy, "v1"), change))
    with pytest.raises(ArtifactError, match=f"{path}: not a valid plan: .*{problem}"):
        load_verified(model_copy, "v1")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (b"\xff", "not valid JSON"),
        (b'{"format": 1', "not valid JSON"),
        (b'{"a": NaN}', "NaN is not a number"),
        (b'{"a": 1, "a": 2}', "duplicate key"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"format": "x", "n_features": 5, "predict": {}}', "format"),
    ],
)
def test_unparseable_plans_are_refused(model_copy: Path, text: bytes, problem: str) -> None:
    path = _write_plan(model_copy, "v1", text)
    with pytest.raises(ArtifactError, match=f"{path}: not a valid plan: {problem}"):
        load_verified(model_copy, "v1")


def test_non_finite_numbers_are_refused(model_copy: Path) -> None:
    text = plan_to_json(_plan(model_copy, "v1"))
    value = json.dumps(_gbm_tree(_plan(model_copy, "v1"))["value"][2]).encode()
    path = _write_plan(model_copy, "v1", text.replace(value, b"1e999", 1))
    with pytest.raises(ArtifactError, match=f"{path}: not a valid plan: .*expected a finite"):
        load_verified(model_copy, "v1")


def test_plan_validation_limits() -> None:
    tree = {"feature": [0, -1, -1], "threshold": [1.0, 0.0, 0.0], "left": [1, -1, -1]}
    tree |= {"right": [2, -1, -1], "value": [0.0, 1.0, 2.0]}
    gbm = {"op": "gbm", "init": 0.5, "learning_rate": 0.1, "trees": [tree]}
    plan = {"format": PLAN_FORMAT, "n_features": 1, "predict": gbm}
    predict = load_plan(plan_to_json(plan))
    np.testing.assert_array_equal(predict(np.array([[1.0], [2.0]])), [0.5 + 0.1, 0.5 + 0.2])

    deep: dict[str, Any] = {"op": "log_target", "inner": gbm}
    for _ in range(40):
        deep = {"op": "log_target", "inner": deep}
    with pytest.raises(PlanError, match="nested deeper"):
        load_plan(plan_to_json({**plan, "predict": deep}))

    m = 2 * (MAX_TREE_DEPTH + 1) + 1  # a chain one level too deep
    chain = {"feature": [], "threshold": [], "left": [], "right": [], "value": []}
    for i in range(0, m - 1, 2):
        chain["feature"] += [0, -1]
        chain["threshold"] += [0.0, 0.0]
        chain["left"] += [i + 1, -1]
        chain["right"] += [i + 2, -1]
        chain["value"] += [0.0, 0.0]
    for key, leaf in (("feature", -1), ("threshold", 0.0), ("left", -1), ("right", -1)):
        chain[key].append(leaf)
    chain["value"].append(0.0)
    with pytest.raises(PlanError, match="deeper than"):
        load_plan(plan_to_json({**plan, "predict": {**gbm, "trees": [chain]}}))


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"file": "../v2/plan.json"}, "plan entry malformed"),
        ({"sha256": "nope"}, "plan entry malformed"),
        ({"probe": {"rows": 256, "seed": 0, "predictions": [1.0]}}, "plan entry malformed"),
    ],
)
def test_a_malformed_plan_entry_is_refused(
    model_copy: Path, change: dict[str, Any], problem: str
) -> None:
    manifest = _manifest(model_copy, "v1")
    manifest["plan"].update(change)
    path = model_copy / "v1" / MANIFEST_FILE
    path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=f"{path}: {problem}"):
        load_verified(model_copy, "v1")


def test_a_missing_plan_file_is_refused(model_copy: Path) -> None:
    path = model_copy / "v2" / PLAN_FILE
    path.unlink()
    with pytest.raises(ArtifactError, match=f"{path}: missing"):
        load_verified(model_copy, "v2")


@VERSIONS
def test_without_a_plan_entry_the_pickle_serves_the_same_answers(
    models: dict[str, LoadedModel], model_copy: Path, version: ModelVersion, data_path: Path
) -> None:
    """Artifacts from before plans: unpickled, compiled in process, identical answers."""
    manifest = _manifest(model_copy, version)
    del manifest["plan"]
    (model_copy / version / MANIFEST_FILE).write_text(json.dumps(manifest))
    (model_copy / version / PLAN_FILE).unlink()
    model = load_verified(model_copy, version)
    assert model.predict_path == "compiled"
    assert model._estimator is not None
    for X in _rows(version, data_path).values():
        np.testing.assert_array_equal(model.predict(X), models[version].predict(X))


def test_a_pinned_hash_serves_the_pinned_pickle(model_copy: Path) -> None:
    sha = _manifest(model_copy, "v1")["sha256"]
    _write_plan(model_copy, "v1", b"not even JSON")  # ignored: the pin names the pickle
    model = load_verified(model_copy, "v1", expected_sha256=sha)
    assert model._estimator is not None
    assert model.predict_path == "compiled"


# --- writing -------------------------------------------------------------------------------


@VERSIONS
def test_training_records_the_plan(trained_model_dir: Path, version: ModelVersion) -> None:
    manifest = _manifest(trained_model_dir, version)
    data = (trained_model_dir / version / PLAN_FILE).read_bytes()
    assert manifest["plan"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["plan"]["model_sha256"] == manifest["sha256"]
    assert len(manifest["plan"]["probe"]["predictions"]) == len(probe_rows(version))


def test_resaving_replaces_a_stale_plan_entry(model_copy: Path) -> None:
    """As tests/operations/support.py republishes: the old manifest minus its sha256."""
    model = load_verified(model_copy, "v1")
    estimator = model.estimator
    estimator.republished_as_ = "x"
    old = {k: v for k, v in model.manifest.items() if k != "sha256"}
    new = save_artifacts(model_copy, "v1", estimator, old)
    assert new["sha256"] != model.sha256
    assert new["plan"]["model_sha256"] == new["sha256"]
    assert load_verified(model_copy, "v1").predict_path == "compiled"

    ds_rows = probe_rows("v1")
    gbm = GradientBoostingRegressor(loss="absolute_error", n_estimators=5, random_state=0)
    gbm.fit(ds_rows, ds_rows[:, 0])
    written = save_artifacts(model_copy, "v1", gbm, new)
    assert "plan" not in written
    assert not (model_copy / "v1" / PLAN_FILE).exists()
    assert load_verified(model_copy, "v1").predict_path == "estimator"
