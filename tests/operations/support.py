"""Helpers for the operations tests that write model artifacts."""

from __future__ import annotations

import json
from pathlib import Path

from ml.artifacts import MANIFEST_FILE, MODEL_FILE, load_verified
from ml.features import ModelVersion
from ml.publish import save_artifacts


def republish(model_dir: Path, version: ModelVersion, marker: str) -> str:
    """Write new, valid artifacts for ``version`` (the same model with a marker attribute,
    so another pickle and another sha256) as a training pipeline would; their sha256."""
    model = load_verified(model_dir, version)
    estimator = model.estimator
    estimator.republished_as_ = marker
    manifest = {key: value for key, value in model.manifest.items() if key != "sha256"}
    sha256: str = save_artifacts(model_dir, version, estimator, manifest)["sha256"]
    return sha256


def corrupt_model(model_dir: Path, version: str) -> None:
    """Flip bytes of ``model.joblib``: its sha256 no longer matches the manifest."""
    path = model_dir / version / MODEL_FILE
    data = bytearray(path.read_bytes())
    data[-10:] = bytes(10)
    path.write_bytes(bytes(data))


def claim_other_libraries(model_dir: Path, version: str) -> None:
    """A manifest recording another scikit-learn than the installed one."""
    path = model_dir / version / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest["libraries"]["scikit-learn"] = "0.0.1"
    path.write_text(json.dumps(manifest))


def remove_manifest(model_dir: Path, version: str) -> None:
    (model_dir / version / MANIFEST_FILE).unlink()
