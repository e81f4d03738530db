"""Fixtures for the ml tests: the training data, and writable copies of trained models."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from ml.features import FEATURES, ModelVersion, allowed_range

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def model_copy(trained_model_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the session's models, safe to tamper with."""
    target = tmp_path / "models"
    shutil.copytree(trained_model_dir, target)
    return target


@pytest.fixture(scope="session")
def data_path() -> Path:
    return REPO_ROOT / "data" / "housing.csv"


def random_rows(version: ModelVersion, n: int, seed: int) -> np.ndarray:
    """In-range rows drawn independently of ml.plan.probe_rows."""
    rng = np.random.default_rng(seed)
    columns = []
    for feature in FEATURES[version]:
        low, high = allowed_range(feature)
        if feature.kind == "float":
            columns.append(rng.uniform(low, high, n))
        else:
            columns.append(rng.integers(low, high + 1, n).astype(np.float64))
    return np.column_stack(columns)
