"""Reference histograms and PSI: one binning rule for training and for later checks."""

from __future__ import annotations

import numpy as np
import pytest

from ml.histograms import (
    bin_counts,
    population_stability_index,
    reference_edges,
    reference_histogram,
)


def test_edges_by_kind() -> None:
    np.testing.assert_array_equal(reference_edges(np.array([0.0, 1.0, 1.0]), "bool"), [0, 0.5, 1])
    np.testing.assert_array_equal(
        reference_edges(np.array([1.0, 3.0, 2.0]), "int"), [0.5, 1.5, 2.5, 3.5]
    )
    edges = reference_edges(np.arange(100, dtype=np.float64), "float")
    assert len(edges) == 11
    assert (edges[0], edges[-1]) == (0.0, 99.0)


def test_outer_bins_are_open() -> None:
    counts = bin_counts(np.array([-5.0, 0.0, 0.7, 1.0, 9.0]), [0.0, 0.5, 1.0])
    assert counts.tolist() == [2, 3]


def test_reference_histogram_counts_every_value() -> None:
    values = np.random.default_rng(0).uniform(0, 1, 1000)
    h = reference_histogram(values, "float")
    assert sum(h["counts"]) == 1000
    assert max(h["counts"]) - min(h["counts"]) <= 1  # equal-mass bins


def test_psi() -> None:
    assert population_stability_index([10, 20, 30], [10, 20, 30]) == 0.0
    assert population_stability_index([10, 20, 30], [1, 2, 3]) == pytest.approx(0.0)
    assert population_stability_index([50, 50], [90, 10]) > 0.25
    assert np.isfinite(population_stability_index([50, 50], [100, 0]))
    with pytest.raises(ValueError, match="same bins"):
        population_stability_index([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="at least one"):
        population_stability_index([0, 0], [1, 2])
