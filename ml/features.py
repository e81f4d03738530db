"""The feature contract shared by training, the HTTP schemas and drift checks.

Input bounds follow one documented rule: a numeric feature accepts
``[floor(training_min * 0.5), ceil(training_max * 1.5)]``. The model never saw
values outside the training range; the margin admits plausible houses a little
beyond it while refusing absurd ones (a negative lot, a thousand bedrooms).
``tests/ml/test_features.py`` recomputes the bounds from ``data/housing.csv``
so they cannot drift from the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

MARGIN_LOW = 0.5
MARGIN_HIGH = 1.5

FeatureKind = Literal["int", "float", "bool"]
ModelVersion = Literal["v1", "v2"]
MODEL_VERSIONS: tuple[ModelVersion, ...] = ("v1", "v2")


@dataclass(frozen=True)
class Feature:
    name: str
    kind: FeatureKind
    description: str
    training_min: float = 0.0
    training_max: float = 1.0
    example: float | bool = 0

    @property
    def lower(self) -> int:
        return math.floor(self.training_min * MARGIN_LOW)

    @property
    def upper(self) -> int:
        return math.ceil(self.training_max * MARGIN_HIGH)


NUMERIC: tuple[Feature, ...] = (
    Feature("lotsize", "float", "Lot size in square feet.", 1650, 16200, 5850),
    Feature("bedrooms", "int", "Number of bedrooms.", 1, 6, 3),
    Feature("bathrms", "int", "Number of full bathrooms.", 1, 4, 1),
    Feature("stories", "int", "Number of stories, excluding the basement.", 1, 4, 2),
    Feature("garagepl", "int", "Number of garage places.", 0, 3, 1),
)

AMENITIES: tuple[Feature, ...] = (
    Feature("driveway", "bool", "Has a driveway.", example=True),
    Feature("recroom", "bool", "Has a recreation room.", example=False),
    Feature("fullbase", "bool", "Has a full finished basement.", example=True),
    Feature("gashw", "bool", "Uses gas for hot-water heating.", example=False),
    Feature("airco", "bool", "Has central air conditioning.", example=False),
    Feature("prefarea", "bool", "Is in a preferred neighbourhood.", example=False),
)

FEATURES: dict[ModelVersion, tuple[Feature, ...]] = {
    "v1": NUMERIC,
    "v2": NUMERIC + AMENITIES,
}

TARGET = "price"


def feature_names(version: ModelVersion) -> list[str]:
    return [f.name for f in FEATURES[version]]


def allowed_range(feature: Feature) -> tuple[int, int]:
    """The inclusive range an input may take, as a number the model sees.

    Booleans reach the model as 0.0/1.0, so their range is [0, 1] rather than what
    the numeric margin rule would give; every other kind follows the rule.
    """
    if feature.kind == "bool":
        return 0, 1
    return feature.lower, feature.upper
