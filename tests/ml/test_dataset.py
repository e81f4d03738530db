"""Loading the CSV: exact columns, exact hash, and loud failures on bad input."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from ml.dataset import DatasetError, load_dataset
from ml.features import ModelVersion, feature_names


def _provenance_sha256(data_path: Path) -> str:
    text = (data_path.parent / "PROVENANCE.md").read_text(encoding="utf-8")
    match = re.search(r"sha256: `([0-9a-f]{64})`", text)
    assert match, "data/PROVENANCE.md records no sha256"
    return match.group(1)


def test_sha256_matches_provenance(data_path: Path) -> None:
    assert load_dataset(data_path, "v1").sha256 == _provenance_sha256(data_path)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_shapes_dtypes_and_column_order(data_path: Path, version: ModelVersion) -> None:
    ds = load_dataset(data_path, version)
    assert ds.X.shape == (546, len(feature_names(version)))
    assert ds.X.dtype == np.float64
    assert ds.y.shape == (546,)
    assert ds.y.dtype == np.float64
    assert ds.rows == 546
    assert list(ds.feature_names) == feature_names(version)


def test_first_row_is_parsed_as_written(data_path: Path) -> None:
    # "1",42000,5850,3,1,2,"yes","no","yes","no","no",1,"no"
    ds = load_dataset(data_path, "v2")
    assert ds.y[0] == 42000.0
    assert ds.X[0].tolist() == [5850.0, 3.0, 1.0, 2.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0]


def _write(tmp_path: Path, data_path: Path, old: str, new: str) -> Path:
    text = data_path.read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "housing.csv"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("old", "new", "column"),
    [
        ('"1",42000,5850,3,1,2,"yes"', '"1",42000,5850,3,1,2,"maybe"', "driveway"),
        ('"1",42000,5850,3,', '"1",42000,5850,2.5,', "bedrooms"),
        ('"1",42000,5850,', '"1",42000,nan,', "lotsize"),
        ('"1",42000,', '"1",0,', "price"),
        ('"1",42000,', '"1",,', "price"),
    ],
)
def test_bad_cells_name_file_line_and_column(
    tmp_path: Path, data_path: Path, old: str, new: str, column: str
) -> None:
    path = _write(tmp_path, data_path, old, new)
    with pytest.raises(DatasetError, match=rf"{re.escape(str(path))}:2: column {column}"):
        load_dataset(path, "v2")


def test_missing_column(tmp_path: Path, data_path: Path) -> None:
    path = _write(tmp_path, data_path, '"prefarea"', '"elsewhere"')
    with pytest.raises(DatasetError, match="missing column"):
        load_dataset(path, "v2")
    load_dataset(path, "v1")  # v1 does not need prefarea


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=re.escape(str(tmp_path / "absent.csv"))):
        load_dataset(tmp_path / "absent.csv", "v1")


def test_header_only(tmp_path: Path, data_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text(data_path.read_text(encoding="utf-8").splitlines()[0] + "\n")
    with pytest.raises(DatasetError, match="no data rows"):
        load_dataset(path, "v1")
