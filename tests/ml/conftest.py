"""Fixtures for the ml tests: the training data, and writable copies of trained models."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

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
