"""Prediction intervals: conformal on the log scale, so a range widens with the price.

The method (split-conformal with cross-validated residuals, as in CV+ / jackknife+):

* Training scores every house by ``|log(price) - log(out-of-fold prediction)|``, the
  prediction coming from the chosen estimator fitted on the other folds (the same
  shuffled K folds that chose it, ``ml.training``).
* The served half-width ``q`` on the log scale is the ``ceil((n + 1) * level)``-th
  smallest of those n scores: the split-conformal quantile, which covers a new
  house's price with probability at least ``level`` when houses are exchangeable.
* A prediction ``p`` gets ``[p * exp(-q), p * exp(q)]``. Both ends are ``p`` times a
  positive constant, so they are monotone in ``p`` (IEEE multiplication rounds
  monotonically: ``p1 <= p2`` gives ``p1 * f <= p2 * f``), the range is wider for a
  dearer house in dollars and the same in percent, and a row's interval depends on
  its price alone, never on the batch it came in.

Serving is two multiplications on the float64 prices: NumPy only, nothing imported
beyond it, and nothing fitted at load time.

Where the parameters live: in the version's ``manifest.json``, entry ``interval``
(:func:`check_entry` validates all of it at load; a manifest without one is refused).
The manifest is the root the server trusts: it records the sha256 of
``model.joblib`` and of ``plan.json``, each checked before use. Keeping the interval
there rather than in a new file means the server reads nothing that is neither the
manifest nor a file whose hash the manifest pins, and the interval serves the same
whichever path answers (the plan, the compiled pickle, or a pinned pickle). Like the
rest of the manifest, it is as trustworthy as the directory it is read from:
``MODEL_DIR`` is read-only in production.

How honest it is: training re-runs the whole calibration inside each outer fold
(nested: the quantile comes from out-of-fold residuals of the outer-training rows
only) and reports the coverage on the held-out rows, overall and by tercile, with
the mean width in dollars. See ``ml.training.interval_report``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

LEVEL = 0.9
METHOD = (
    "split-conformal on log(price) with cross-validated residuals: half-width q = the "
    "ceil((n + 1) * level)-th smallest |log(price) - log(out-of-fold prediction)| of the "
    "chosen estimator over the n training rows (same K folds as selection); interval = "
    "[prediction * exp(-q), prediction * exp(q)]"
)
PROTOCOL = (
    "nested: for each of the K outer folds, q is recomputed from an inner K-fold "
    "cross-validation of the chosen estimator on the outer-training rows only, and "
    "judged on the outer held-out rows (predicted by the estimator fitted on the "
    "outer-training rows). The estimator choice itself is not nested."
)
TERCILES = ("low", "middle", "high")
# A log half-width beyond this (a factor of e**5 ~ 148 either way) is no estimate.
MAX_LOG_HALFWIDTH = 5.0

# Every key of the manifest's ``interval`` entry, and what kind of value it holds.
ENTRY_KEYS: dict[str, str] = {
    "method": "str",
    "protocol": "str",
    "level": "fraction",
    "log_halfwidth": "positive",
    "low_factor": "positive",
    "high_factor": "positive",
    "relative_width": "positive",
    "calibration_rows": "count",
    "calibration_rank": "count",
    "held_out_rows": "count",
    "coverage": "fraction",
    "coverage_by_tercile": "terciles",
    "coverage_by_sale_price_tercile": "terciles",
    "tercile_edges": "edges",
    "mean_width": "positive",
    "median_width": "positive",
    "mean_relative_width": "positive",
    "fold_log_halfwidth": "positives",
}


# --- calibration (training) ---------------------------------------------------------------


def conformal_rank(n: int, level: float) -> int:
    """The rank (1-based) of the split-conformal quantile among n scores.

    ``ceil((n + 1) * level)``; more than n means n scores cannot support ``level``.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    rank = math.ceil((n + 1) * level)
    if rank > n:
        raise ValueError(f"{n} scores are too few for a {level:g} interval (need {rank})")
    return rank


def log_scores(prices: FloatArray, predictions: FloatArray) -> FloatArray:
    """Nonconformity scores: ``|log(price) - log(prediction)|`` per row."""
    if np.any(prices <= 0) or np.any(predictions <= 0):
        raise ValueError("log-scale intervals need positive prices and predictions")
    scores: FloatArray = np.abs(np.log(prices) - np.log(predictions))
    return scores


def conformal_halfwidth(scores: FloatArray, level: float = LEVEL) -> float:
    """The split-conformal quantile of ``scores``: their ``conformal_rank``-th smallest."""
    rank = conformal_rank(len(scores), level)
    return float(np.partition(scores, rank - 1)[rank - 1])


def terciles(values: FloatArray) -> tuple[npt.NDArray[np.intp], list[float]]:
    """Tercile index (0, 1, 2) of each value, and the two edges between them."""
    edges = np.quantile(values, [1 / 3, 2 / 3])
    return np.searchsorted(edges, values, side="right"), [float(e) for e in edges]


def coverage_by(covered: npt.NDArray[np.bool_], groups: npt.NDArray[np.intp]) -> dict[str, float]:
    return {name: float(np.mean(covered[groups == i])) for i, name in enumerate(TERCILES)}


# --- serving ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PriceInterval:
    """``[price * exp(-q), price * exp(q)]`` at ``level``; see the module docstring."""

    level: float
    log_halfwidth: float
    low_factor: float = field(init=False)
    high_factor: float = field(init=False)

    def __post_init__(self) -> None:
        if not (0.0 < self.level < 1.0):
            raise ValueError(f"level must be in (0, 1), got {self.level!r}")
        q = self.log_halfwidth
        if not (isinstance(q, float) and math.isfinite(q) and 0.0 < q <= MAX_LOG_HALFWIDTH):
            raise ValueError(f"log_halfwidth must be in (0, {MAX_LOG_HALFWIDTH}], got {q!r}")
        object.__setattr__(self, "low_factor", float(np.exp(-q)))
        object.__setattr__(self, "high_factor", float(np.exp(q)))

    @property
    def relative_width(self) -> float:
        """Width over price, the same for every house: ``exp(q) - exp(-q)``."""
        return self.high_factor - self.low_factor

    def bounds(self, prices: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Low and high ends for float64 prices, elementwise (so batch-independent)."""
        return prices * self.low_factor, prices * self.high_factor

    def width(self, prices: FloatArray) -> FloatArray:
        """High minus low, in dollars: what a prediction log would record per row."""
        low, high = self.bounds(prices)
        return high - low

    def entry(self) -> dict[str, Any]:
        """The serving part of a manifest ``interval`` entry."""
        return {
            "method": METHOD,
            "level": self.level,
            "log_halfwidth": self.log_halfwidth,
            "low_factor": self.low_factor,
            "high_factor": self.high_factor,
            "relative_width": self.relative_width,
        }


def check_entry(entry: Any) -> PriceInterval:
    """The interval a manifest's ``interval`` entry describes; ValueError if malformed.

    Every key must be present with a value of its kind, nothing else, and the stored
    factors must be the ones ``log_halfwidth`` gives, so the figures ``/vN/model``
    reports are the ones that serve.
    """
    if not isinstance(entry, dict):
        raise ValueError("interval entry missing or not an object; retrain")
    if set(entry) != set(ENTRY_KEYS):
        raise ValueError(
            f"interval entry keys {sorted(entry)}, expected {sorted(ENTRY_KEYS)}; retrain"
        )
    for key, kind in ENTRY_KEYS.items():
        if not _is_kind(entry[key], kind):
            raise ValueError(f"interval entry: {key} is not a valid {kind}")
    interval = PriceInterval(level=entry["level"], log_halfwidth=entry["log_halfwidth"])
    for key in ("low_factor", "high_factor", "relative_width"):
        if entry[key] != getattr(interval, key):
            raise ValueError(f"interval entry: {key} does not follow from log_halfwidth")
    return interval


def _finite(value: Any) -> bool:
    return type(value) is float and math.isfinite(value)


def _is_kind(value: Any, kind: str) -> bool:
    if kind == "str":
        return isinstance(value, str) and bool(value)
    if kind == "fraction":
        return _finite(value) and 0.0 <= value <= 1.0
    if kind == "positive":
        return _finite(value) and value > 0.0
    if kind == "count":
        return type(value) is int and value > 0
    if kind == "terciles":
        return (
            isinstance(value, dict)
            and list(value) == list(TERCILES)
            and all(_is_kind(v, "fraction") for v in value.values())
        )
    if kind == "edges":
        return (
            isinstance(value, list)
            and len(value) == 2
            and all(_is_kind(v, "positive") for v in value)
            and value[0] <= value[1]
        )
    if kind == "positives":
        return (
            isinstance(value, list) and bool(value) and all(_is_kind(v, "positive") for v in value)
        )
    raise AssertionError(kind)
