"""The bounds in ml/features.py are the documented rule applied to data/housing.csv."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import pytest

from ml.features import (
    AMENITIES,
    FEATURES,
    MARGIN_HIGH,
    MARGIN_LOW,
    NUMERIC,
    allowed_range,
    feature_names,
)


def _columns(path: Path) -> dict[str, list[str]]:
    # Read with the csv module directly, independently of ml.dataset.
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return {name: [row[name] for row in rows] for name in rows[0]}


@pytest.mark.parametrize("feature", NUMERIC, ids=lambda f: f.name)
def test_numeric_bounds_follow_the_rule_on_the_data(feature, data_path: Path) -> None:
    values = [float(v) for v in _columns(data_path)[feature.name]]
    assert (feature.training_min, feature.training_max) == (min(values), max(values))
    assert feature.lower == math.floor(min(values) * MARGIN_LOW)
    assert feature.upper == math.ceil(max(values) * MARGIN_HIGH)
    assert allowed_range(feature) == (feature.lower, feature.upper)
    if feature.kind == "int":
        assert all(v.is_integer() for v in values)


@pytest.mark.parametrize("feature", AMENITIES, ids=lambda f: f.name)
def test_amenities_are_yes_or_no_and_reach_the_model_as_0_or_1(feature, data_path: Path) -> None:
    assert set(_columns(data_path)[feature.name]) == {"yes", "no"}
    assert allowed_range(feature) == (0, 1)


def test_examples_lie_inside_the_bounds() -> None:
    for feature in NUMERIC:
        low, high = allowed_range(feature)
        assert low <= float(feature.example) <= high


def test_versions_and_column_order() -> None:
    assert feature_names("v1") == ["lotsize", "bedrooms", "bathrms", "stories", "garagepl"]
    assert feature_names("v2") == feature_names("v1") + [f.name for f in AMENITIES]
    assert FEATURES["v2"][: len(FEATURES["v1"])] == FEATURES["v1"]


def test_provenance_table_matches_the_declared_ranges(data_path: Path) -> None:
    text = (data_path.parent / "PROVENANCE.md").read_text(encoding="utf-8")
    table = {
        m["name"]: (float(m["low"].replace(",", "")), float(m["high"].replace(",", "")))
        for m in re.finditer(
            r"^\| (?P<name>\w+) \| (?P<low>[\d,]+) \| (?P<high>[\d,]+) \|$", text, re.M
        )
    }
    for feature in NUMERIC:
        assert table[feature.name] == (feature.training_min, feature.training_max)
