"""Load ``data/housing.csv`` into float64 arrays, strictly.

The bytes are read once, hashed and parsed from that same buffer, so the sha256
recorded in a manifest is the hash of exactly the rows the model was trained on.
Anything unexpected (a missing column, ``"maybe"`` for an amenity, a fractional
bedroom count, NaN) stops training with the file and line named: a model quietly
trained on a mis-parsed column would still answer, just wrongly.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ml.features import FEATURES, TARGET, Feature, ModelVersion

FloatArray = npt.NDArray[np.float64]

YES_NO = {"yes": 1.0, "no": 0.0}


class DatasetError(ValueError):
    """The training data cannot be used; the message names the file and the problem."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """Features in ``feature_names(version)`` order, the target, and where they came from."""

    path: Path
    version: ModelVersion
    feature_names: tuple[str, ...]
    X: FloatArray
    y: FloatArray
    sha256: str

    @property
    def rows(self) -> int:
        return int(self.X.shape[0])


def _parse(feature: Feature, raw: str | None) -> float:
    """One cell as the model sees it; raises ValueError with a short reason."""
    if raw is None:
        raise ValueError("value missing (short row)")
    if feature.kind == "bool":
        if raw not in YES_NO:
            raise ValueError(f"expected 'yes' or 'no', got {raw!r}")
        return YES_NO[raw]
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {raw!r}")
    if feature.kind == "int" and not value.is_integer():
        raise ValueError(f"expected a whole number, got {raw!r}")
    return value


def load_dataset(path: Path, version: ModelVersion) -> Dataset:
    """Read ``path`` and return the columns ``version`` is trained on, plus the price."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the training data ({exc.strerror})") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text ({exc.reason})") from exc

    features = FEATURES[version]
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [
        c for c in (TARGET, *(f.name for f in features)) if c not in (reader.fieldnames or [])
    ]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {', '.join(missing)}")

    X_rows: list[list[float]] = []
    y_rows: list[float] = []
    for row in reader:
        where = f"{path}:{reader.line_num}"
        values: list[float] = []
        for f in features:
            try:
                values.append(_parse(f, row[f.name]))
            except ValueError as exc:
                raise DatasetError(f"{where}: column {f.name}: {exc}") from exc
        price = _price(row.get(TARGET))
        if price is None:
            raise DatasetError(f"{where}: column {TARGET}: expected a positive finite number")
        X_rows.append(values)
        y_rows.append(price)
    if not X_rows:
        raise DatasetError(f"{path}: no data rows")

    return Dataset(
        path=path,
        version=version,
        feature_names=tuple(f.name for f in features),
        X=np.array(X_rows, dtype=np.float64),
        y=np.array(y_rows, dtype=np.float64),
        sha256=hashlib.sha256(raw).hexdigest(),
    )


def _price(raw: str | None) -> float | None:
    """The target must be positive: the log-price models take its logarithm."""
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


def observed_ranges(dataset: Dataset) -> dict[str, tuple[float, float]]:
    """Per feature, the smallest and largest value in the data."""
    return {
        name: (float(dataset.X[:, j].min()), float(dataset.X[:, j].max()))
        for j, name in enumerate(dataset.feature_names)
    }
