"""Reference histograms of the training data, and the population stability index.

Training records, per feature and for the predictions on the training rows, bin
edges and counts in the manifest. A later drift check bins live inputs with
:func:`bin_counts` on those same edges and compares with :func:`population_stability_index`.
Keeping both halves here means the check cannot bin differently from training.

Binning: booleans get two bins (0 and 1); whole-number features one bin per value
(edges at half-integers); continuous values ten equal-mass (decile) bins. The outer
bins are open: a value beyond the training range counts in the first or last bin,
because inputs are allowed a margin past it (see ``ml/features.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from ml.features import FeatureKind

QUANTILE_BINS = 10
# Floor for an empty bin's share, so that the logarithm in the PSI stays finite.
PSI_FLOOR = 1e-4


def reference_edges(values: npt.NDArray[np.float64], kind: FeatureKind) -> npt.NDArray[np.float64]:
    """Bin edges suited to the kind of value (see the module docstring)."""
    if kind == "bool":
        return np.array([0.0, 0.5, 1.0])
    if kind == "int":
        return np.arange(values.min() - 0.5, values.max() + 1.0, 1.0)
    return np.unique(np.quantile(values, np.linspace(0.0, 1.0, QUANTILE_BINS + 1)))


def bin_counts(
    values: npt.NDArray[np.float64], edges: npt.NDArray[np.float64] | list[float]
) -> npt.NDArray[np.int64]:
    """Counts per bin, with values outside the edges counted in the outer bins."""
    edges = np.asarray(edges, dtype=np.float64)
    counts, _ = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)
    return counts.astype(np.int64)


def reference_histogram(values: npt.NDArray[np.float64], kind: FeatureKind) -> dict[str, Any]:
    """The JSON-ready ``{"edges", "counts"}`` a manifest stores for one column."""
    edges = reference_edges(values, kind)
    return {"edges": edges.tolist(), "counts": bin_counts(values, edges).tolist()}


def population_stability_index(
    expected: npt.ArrayLike, actual: npt.ArrayLike, *, floor: float = PSI_FLOOR
) -> float:
    """PSI = sum((a - e) * ln(a / e)) over bin shares; < 0.1 stable, > 0.25 shifted."""
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.shape != a.shape or e.ndim != 1:
        raise ValueError("expected and actual must be 1-D counts over the same bins")
    if e.sum() <= 0 or a.sum() <= 0:
        raise ValueError("both histograms need at least one observation")
    e_share = np.maximum(e / e.sum(), floor)
    a_share = np.maximum(a / a.sum(), floor)
    return float(np.sum((a_share - e_share) * np.log(a_share / e_share)))
