"""Training: honest selection, complete manifests, atomic files, reproducible bytes."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.ensemble import VotingRegressor
from sklearn.model_selection import KFold

from ml.artifacts import MANIFEST_FILE, MODEL_FILE, PLAN_FILE, load_verified
from ml.candidates import BASELINE, CANDIDATES
from ml.dataset import DatasetError, load_dataset
from ml.features import FEATURES, MODEL_VERSIONS, ModelVersion, allowed_range
from ml.training import cross_validate, train_version

VERSIONS = pytest.mark.parametrize("version", MODEL_VERSIONS)
REPO_ROOT = Path(__file__).resolve().parents[2]


def _manifest(model_dir: Path, version: str) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((model_dir / version / MANIFEST_FILE).read_text())
    return manifest


def _candidates(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in manifest["metrics"]["candidates"]}


@VERSIONS
def test_manifest_fields(trained_model_dir: Path, version: ModelVersion, data_path: Path) -> None:
    m = _manifest(trained_model_dir, version)
    assert m["version"] == version
    assert {"name", "description", "class", "params"} <= m["estimator"].keys()
    assert m["target"]["name"] == "price"
    assert (
        m["sha256"]
        == hashlib.sha256((trained_model_dir / version / MODEL_FILE).read_bytes()).hexdigest()
    )
    assert m["training_data"] == {
        "file": "housing.csv",
        "sha256": load_dataset(data_path, version).sha256,
        "rows": 546,
    }
    assert m["libraries"] == {
        "python": ".".join(map(str, sys.version_info[:3])),
        **{n: importlib.metadata.version(n) for n in ("numpy", "scikit-learn", "scipy", "joblib")},
    }
    assert m["seed"] == 0
    assert m["folds"] == 10
    cv = m["metrics"]["cv"]
    assert (cv["folds"], cv["seed"], cv["shuffle"]) == (10, 0, True)
    assert "lowest mean out-of-fold MAE" in cv["selection"]
    trained_at = datetime.strptime(m["trained_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - trained_at).total_seconds()) < 3600


@VERSIONS
def test_manifest_features_carry_training_and_accepted_ranges(
    trained_model_dir: Path, version: ModelVersion
) -> None:
    features = _manifest(trained_model_dir, version)["features"]
    assert [f["name"] for f in features] == [f.name for f in FEATURES[version]]
    for recorded, feature in zip(features, FEATURES[version], strict=True):
        assert recorded["kind"] == feature.kind
        assert (recorded["training_min"], recorded["training_max"]) == (
            feature.training_min,
            feature.training_max,
        )
        assert (recorded["accepted_min"], recorded["accepted_max"]) == allowed_range(feature)


@VERSIONS
def test_histograms_for_drift(trained_model_dir: Path, version: ModelVersion) -> None:
    histograms = _manifest(trained_model_dir, version)["histograms"]
    assert histograms["binning"]
    for feature in FEATURES[version]:
        h = histograms["features"][feature.name]
        assert sum(h["counts"]) == 546
        assert len(h["edges"]) == len(h["counts"]) + 1
        assert h["edges"] == sorted(h["edges"])
        if feature.kind == "bool":
            assert len(h["counts"]) == 2
        if feature.kind == "int":
            assert len(h["counts"]) == feature.training_max - feature.training_min + 1
    prediction = histograms["prediction"]
    assert sum(prediction["counts"]) == 546
    assert len(prediction["counts"]) == 10


@VERSIONS
def test_every_candidate_is_scored_and_the_best_is_chosen(
    trained_model_dir: Path, version: ModelVersion
) -> None:
    metrics = _manifest(trained_model_dir, version)["metrics"]
    scored = _candidates(_manifest(trained_model_dir, version))
    assert list(scored) == [c.name for c in CANDIDATES]
    assert all(c["folds"] == 10 for c in scored.values())
    chosen, baseline = metrics["chosen"], metrics["baseline"]
    assert baseline["name"] == BASELINE
    assert chosen["mae"] <= baseline["mae"]
    assert chosen["mae"] == min(c["mae"] for c in scored.values())
    assert _manifest(trained_model_dir, version)["estimator"]["name"] == chosen["name"]
    assert len(chosen["fold_mae"]) == len(baseline["fold_mae"]) == 10
    gain = metrics["improvement_over_baseline"]
    assert gain["mae"] == pytest.approx(baseline["mae"] - chosen["mae"])
    assert gain["mae_se"] > 0


def test_reference_numbers_on_this_data(trained_model_dir: Path) -> None:
    """Anchors from the brief: if these move, the data or the CV changed."""
    v1 = _candidates(_manifest(trained_model_dir, "v1"))
    v2 = _candidates(_manifest(trained_model_dir, "v2"))
    assert v1["linear"]["mae"] == pytest.approx(13_150, abs=100)
    assert v1["linear"]["r2"] == pytest.approx(0.54, abs=0.01)
    assert v2["log_linear"]["mae"] == pytest.approx(11_100, abs=100)
    assert v2["log_linear"]["r2"] == pytest.approx(0.66, abs=0.01)
    for scored, reference in ((v1, "linear"), (v2, "log_linear")):
        assert scored["gbm_default"]["mae"] > scored[reference]["mae"]


def test_averaged_candidate_scores_what_voting_regressor_predicts(data_path: Path) -> None:
    """CV reuses the members' out-of-fold predictions; the real ensemble must agree."""
    ds = load_dataset(data_path, "v1")
    by_name = {c.name: c for c in CANDIDATES}
    average = next(c for c in CANDIDATES if c.average_of)
    members = tuple(by_name[m] for m in average.average_of)
    [*_, score] = cross_validate(ds, seed=3, folds=3, candidates=(*members, average))
    lot = list(ds.feature_names).index("lotsize")
    fold_mae = []
    for train, test in KFold(3, shuffle=True, random_state=3).split(ds.X):
        model = average.build(3, lot, ds.X.shape[1])
        assert isinstance(model, VotingRegressor)
        pred = model.fit(ds.X[train], ds.y[train]).predict(ds.X[test])
        fold_mae.append(float(np.mean(np.abs(ds.y[test] - pred))))
    np.testing.assert_allclose(score.fold_mae, fold_mae, rtol=1e-12)


@VERSIONS
def test_files_are_world_readable_and_no_temp_files_remain(
    trained_model_dir: Path, version: ModelVersion
) -> None:
    directory = trained_model_dir / version
    assert sorted(p.name for p in directory.iterdir()) == [MANIFEST_FILE, MODEL_FILE, PLAN_FILE]
    for name in (MANIFEST_FILE, MODEL_FILE, PLAN_FILE):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o644


def test_retraining_in_another_process_is_byte_identical(
    trained_model_dir: Path, tmp_path: Path, data_path: Path
) -> None:
    """Same data and seed: the same joblib bytes (so the same sha256) and the same metrics.

    Run in a fresh interpreter with another hash seed, so that neither set ordering
    nor state left in this process can make two runs agree by accident.
    """
    script = "import sys; from pathlib import Path; from ml.training import train_all; "
    script += "train_all(Path(sys.argv[1]), Path(sys.argv[2]))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run(
        [sys.executable, "-c", script, str(data_path), str(tmp_path)],
        check=True,
        cwd=REPO_ROOT,
        env=env,
    )
    for version in MODEL_VERSIONS:
        first, second = _manifest(trained_model_dir, version), _manifest(tmp_path, version)
        assert second["sha256"] == first["sha256"]
        for name in (MODEL_FILE, PLAN_FILE):
            assert (tmp_path / version / name).read_bytes() == (
                trained_model_dir / version / name
            ).read_bytes()
        del first["trained_at"], second["trained_at"]
        assert second == first
        rows = load_dataset(data_path, version).X
        np.testing.assert_array_equal(
            load_verified(tmp_path, version).predict(rows),
            load_verified(trained_model_dir, version).predict(rows),
        )


def test_data_outside_the_declared_ranges_is_refused(tmp_path: Path, data_path: Path) -> None:
    """The API's bounds come from ml/features.py; training on other ranges would void them."""
    text = data_path.read_text(encoding="utf-8")
    path = tmp_path / "housing.csv"
    path.write_text(text.replace('"1",42000,5850,', '"1",42000,17000,', 1), encoding="utf-8")
    with pytest.raises(DatasetError, match=r"lotsize spans 1650\.\.17000 but ml/features.py"):
        train_version(path, tmp_path / "models", "v1")
    assert not (tmp_path / "models").exists()


def test_only_candidates_with_a_plan_are_chosen() -> None:
    """Serving replays a plan; a better score without one is reported, never chosen."""
    from ml.training import CVScore, select

    def score(name: str, mae: float, plan: bool) -> CVScore:
        return CVScore(name, name, mae, mae, 0.5, (mae,) * 10, plan=plan)

    scores = [score("a", 3.0, True), score("b", 1.0, False), score("c", 2.0, True)]
    assert select(scores).name == "c"
    assert select([*scores, score("d", 2.0, True)]).name == "c"  # ties: the earlier


@VERSIONS
def test_the_manifest_says_which_candidates_could_serve(
    trained_model_dir: Path, version: ModelVersion
) -> None:
    manifest = _manifest(trained_model_dir, version)
    scored = _candidates(manifest)
    assert {name: c["plan"] for name, c in scored.items()} == {c.name: c.plan for c in CANDIDATES}
    assert any(not c.plan for c in CANDIDATES)
    chosen = manifest["metrics"]["chosen"]
    assert chosen["plan"] is True
    assert chosen["mae"] == min(c["mae"] for c in scored.values() if c["plan"])
    assert "plan" in manifest  # and the server has one to replay
