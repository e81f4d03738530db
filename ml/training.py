"""Train v1 and v2: choose an estimator by cross-validation, fit it, write the artifacts.

Selection is honest in the usual sense: every candidate in ``ml.candidates`` is
scored on the same shuffled K folds, only on rows it was not fitted on, and the
lowest mean MAE wins (MAE because it is what a price estimate is judged by, in
currency). The winner's score is the best of several, so it is a little
optimistic; the baseline's score is not, and both are reported.

Only candidates the server can replay as a plan (``Candidate.plan``) may be chosen;
the others are scored and reported beside them.

The same run calibrates the chosen model's 90% price range (``ml.intervals``): its
out-of-fold predictions give the conformal half-width that serves, and
:func:`interval_report` repeats the calibration inside each outer fold to measure,
on sales the calibration never saw, how often the range holds.

Deterministic: the folds and every random estimator use ``seed``, so the same data
and seed give the same metrics, the same predictions and (with the pinned
libraries) the same ``model.joblib`` bytes. Only ``trained_at`` differs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error
from sklearn.model_selection import KFold
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from ml.artifacts import library_versions
from ml.candidates import BASELINE, CANDIDATES, Candidate
from ml.dataset import Dataset, DatasetError, FloatArray, load_dataset, observed_ranges
from ml.features import FEATURES, MODEL_VERSIONS, TARGET, ModelVersion, allowed_range
from ml.histograms import QUANTILE_BINS, reference_histogram
from ml.intervals import (
    LEVEL,
    PROTOCOL,
    PriceInterval,
    conformal_halfwidth,
    conformal_rank,
    coverage_by,
    log_scores,
    terciles,
)
from ml.plan_compiler import plan_for
from ml.publish import save_artifacts

IntArray = npt.NDArray[np.intp]

SELECTION_RULE = (
    "lowest mean out-of-fold MAE over the same shuffled K folds, among the candidates the "
    "server can replay as a plan (plan: true); ties go to the earlier (simpler) candidate. "
    "The others are scored and reported only. The chosen score is a minimum over "
    "candidates, so slightly optimistic; the baseline's is not."
)
BINNING_RULE = (
    f"bool: two bins (0, 1); int: one bin per whole value; float and prediction: "
    f"{QUANTILE_BINS} equal-mass bins of the training rows. Outer bins are open: values "
    "beyond the edges count in the first or last bin (ml.histograms.bin_counts)."
)


@dataclass(frozen=True)
class CVScore:
    """One candidate's out-of-fold metrics, averaged over folds."""

    name: str
    description: str
    mae: float
    rmse: float
    r2: float
    fold_mae: tuple[float, ...]
    plan: bool = True

    @property
    def mae_fold_std(self) -> float:
        return float(np.std(self.fold_mae, ddof=1)) if len(self.fold_mae) > 1 else 0.0

    def summary(self, *, with_folds: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "mae": self.mae,
            "rmse": self.rmse,
            "r2": self.r2,
            "mae_fold_std": self.mae_fold_std,
            "folds": len(self.fold_mae),
            "plan": self.plan,
        }
        if with_folds:
            out["fold_mae"] = list(self.fold_mae)
        return out


def _lot_column(dataset: Dataset) -> int:
    return dataset.feature_names.index("lotsize")


@dataclass(frozen=True)
class OutOfFold:
    """Every candidate's predictions on the rows it was not fitted on, per fold."""

    splits: list[tuple[IntArray, IntArray]]
    predictions: dict[str, list[FloatArray]]

    def in_row_order(self, name: str) -> FloatArray:
        """One candidate's out-of-fold predictions, one per row, in the data's order."""
        out = np.empty(sum(len(test) for _, test in self.splits))
        for (_, test), predicted in zip(self.splits, self.predictions[name], strict=True):
            out[test] = predicted
        return out


def _splits(X: FloatArray, *, seed: int, folds: int) -> list[tuple[IntArray, IntArray]]:
    return list(KFold(n_splits=folds, shuffle=True, random_state=seed).split(X))


def out_of_fold(
    X: FloatArray,
    y: FloatArray,
    lot: int,
    *,
    seed: int,
    folds: int,
    candidates: tuple[Candidate, ...] = CANDIDATES,
) -> OutOfFold:
    """Each candidate fitted on K-1 folds and asked about the Kth, for every fold.

    An average's members must be listed before it: its predictions are theirs, averaged.
    """
    splits = _splits(X, seed=seed, folds=folds)
    width = X.shape[1]
    oof: dict[str, list[FloatArray]] = {}
    for candidate in candidates:
        if candidate.average_of:
            missing = [m for m in candidate.average_of if m not in oof]
            if missing:
                raise ValueError(f"{candidate.name}: members {missing} must be listed before it")
            # VotingRegressor.predict is exactly this average of its members' predictions,
            # and its members are fitted on the same folds with the same seed.
            oof[candidate.name] = [
                np.average(np.asarray([oof[m][k] for m in candidate.average_of]).T, axis=1)
                for k in range(folds)
            ]
        else:
            # One OpenMP thread: histogram boosting spends 7x longer in thread start-up
            # than in arithmetic on 500 rows. Nothing else here uses OpenMP; BLAS is left be.
            with threadpool_limits(limits=1, user_api="openmp"):
                oof[candidate.name] = [
                    candidate.build(seed, lot, width).fit(X[train], y[train]).predict(X[test])
                    for train, test in splits
                ]
    return OutOfFold(splits, oof)


def cross_validate(
    dataset: Dataset,
    *,
    seed: int,
    folds: int,
    candidates: tuple[Candidate, ...] = CANDIDATES,
) -> list[CVScore]:
    """Out-of-fold metrics for every candidate, in candidate order."""
    oof = out_of_fold(
        dataset.X, dataset.y, _lot_column(dataset), seed=seed, folds=folds, candidates=candidates
    )
    return _scores(dataset.y, oof, candidates)


def _scores(y: FloatArray, oof: OutOfFold, candidates: tuple[Candidate, ...]) -> list[CVScore]:
    truth = [y[test] for _, test in oof.splits]
    return [_score(c, truth, oof.predictions[c.name]) for c in candidates]


def _with_members(candidate: Candidate) -> tuple[Candidate, ...]:
    """The candidate, preceded by the members it averages (recursively), for ``out_of_fold``."""
    by_name = {c.name: c for c in CANDIDATES}
    members: tuple[Candidate, ...] = ()
    for name in candidate.average_of:
        members += tuple(c for c in _with_members(by_name[name]) if c not in members)
    return (*members, candidate)


def interval_report(
    dataset: Dataset,
    candidate: Candidate,
    oof: OutOfFold,
    *,
    seed: int,
    folds: int,
    level: float = LEVEL,
) -> dict[str, Any]:
    """The served interval (from ``oof``) and its nested held-out check (ml.intervals).

    ``oof`` holds ``candidate``'s out-of-fold predictions on ``dataset`` (the selection
    run's). Served: the conformal half-width of all n out-of-fold scores. Checked: for
    each outer fold, the half-width from an inner K-fold run on the outer-training rows
    alone, applied to the outer fold's predictions (the estimator fitted on those same
    outer-training rows: ``oof``'s), and scored on the outer fold's prices.
    """
    X, y, lot = dataset.X, dataset.y, _lot_column(dataset)
    predicted = oof.in_row_order(candidate.name)
    served = PriceInterval(level, conformal_halfwidth(log_scores(y, predicted), level))
    chain = _with_members(candidate)
    low, high = np.empty_like(y), np.empty_like(y)
    fold_halfwidth = []
    for train, test in oof.splits:
        inner = out_of_fold(X[train], y[train], lot, seed=seed, folds=folds, candidates=chain)
        scores = log_scores(y[train], inner.in_row_order(candidate.name))
        fold_interval = PriceInterval(level, conformal_halfwidth(scores, level))
        fold_halfwidth.append(fold_interval.log_halfwidth)
        low[test], high[test] = fold_interval.bounds(predicted[test])
    covered = (low <= y) & (y <= high)
    width = high - low
    by_prediction, edges = terciles(predicted)
    by_price, _ = terciles(y)
    return {
        **served.entry(),
        "protocol": PROTOCOL,
        "calibration_rows": len(y),
        "calibration_rank": conformal_rank(len(y), level),
        "held_out_rows": len(y),
        "coverage": float(np.mean(covered)),
        "coverage_by_tercile": coverage_by(covered, by_prediction),
        "coverage_by_sale_price_tercile": coverage_by(covered, by_price),
        "tercile_edges": edges,
        "mean_width": float(np.mean(width)),
        "median_width": float(np.median(width)),
        "mean_relative_width": float(np.mean(width / predicted)),
        "fold_log_halfwidth": fold_halfwidth,
    }


def _score(candidate: Candidate, truth: list[FloatArray], preds: list[FloatArray]) -> CVScore:
    pairs = list(zip(truth, preds, strict=True))
    fold_mae = tuple(float(mean_absolute_error(t, p)) for t, p in pairs)
    return CVScore(
        name=candidate.name,
        description=candidate.description,
        mae=float(np.mean(fold_mae)),
        rmse=float(np.mean([root_mean_squared_error(t, p) for t, p in pairs])),
        r2=float(np.mean([r2_score(t, p) for t, p in pairs])),
        fold_mae=fold_mae,
        plan=candidate.plan,
    )


def select(scores: list[CVScore]) -> CVScore:
    """The lowest mean MAE among candidates with a plan; ``min`` keeps the first of
    equals, i.e. the simpler one."""
    return min((s for s in scores if s.plan), key=lambda s: s.mae)


def _check_ranges(dataset: Dataset) -> None:
    """Refuse data whose ranges differ from ml/features.py: the API's bounds derive from them."""
    for feature, (low, high) in zip(
        FEATURES[dataset.version], observed_ranges(dataset).values(), strict=True
    ):
        if feature.kind == "bool":
            continue
        if (low, high) != (feature.training_min, feature.training_max):
            raise DatasetError(
                f"{dataset.path}: {feature.name} spans {low:g}..{high:g} but ml/features.py "
                f"declares {feature.training_min:g}..{feature.training_max:g}; the API's input "
                "bounds derive from those, so update ml/features.py first"
            )


def _improvement(chosen: CVScore, baseline: CVScore) -> dict[str, float]:
    """Paired per-fold MAE gain over the baseline, with its standard error."""
    diff = np.subtract(baseline.fold_mae, chosen.fold_mae)
    se = float(np.std(diff, ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else 0.0
    return {"mae": float(diff.mean()), "mae_se": se}


def build_manifest(
    dataset: Dataset,
    estimator: Any,
    scores: list[CVScore],
    chosen: CVScore,
    *,
    seed: int,
    folds: int,
    interval: dict[str, Any],
) -> dict[str, Any]:
    """Everything but the artifact's sha256, which ``save_artifacts`` adds.

    ``interval`` is ``interval_report``'s: the served interval and its held-out check.
    """
    baseline = next(s for s in scores if s.name == BASELINE)
    ranges = observed_ranges(dataset)
    predictions = np.asarray(estimator.predict(dataset.X), dtype=np.float64)
    features = []
    histograms: dict[str, Any] = {}
    for j, feature in enumerate(FEATURES[dataset.version]):
        low, high = allowed_range(feature)
        features.append(
            {
                "name": feature.name,
                "kind": feature.kind,
                "training_min": ranges[feature.name][0],
                "training_max": ranges[feature.name][1],
                "accepted_min": low,
                "accepted_max": high,
            }
        )
        histograms[feature.name] = reference_histogram(dataset.X[:, j], feature.kind)
    return {
        "version": dataset.version,
        "estimator": {
            "name": chosen.name,
            "description": chosen.description,
            "class": type(estimator).__name__,
            "params": " ".join(repr(estimator).split()),
        },
        "features": features,
        "target": {
            "name": TARGET,
            "training_min": float(dataset.y.min()),
            "training_max": float(dataset.y.max()),
        },
        "training_data": {
            "file": dataset.path.name,
            "sha256": dataset.sha256,
            "rows": dataset.rows,
        },
        "libraries": library_versions(),
        "metrics": {
            "cv": {"folds": folds, "shuffle": True, "seed": seed, "selection": SELECTION_RULE},
            "chosen": chosen.summary(with_folds=True),
            "baseline": baseline.summary(with_folds=True),
            "improvement_over_baseline": _improvement(chosen, baseline),
            "candidates": [s.summary() for s in scores],
        },
        "interval": interval,
        "trained_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seed": seed,
        "folds": folds,
        "histograms": {
            "binning": BINNING_RULE,
            "features": histograms,
            "prediction": reference_histogram(predictions, "float"),
        },
    }


def train_version(
    data_path: Path,
    model_dir: Path,
    version: ModelVersion,
    *,
    seed: int = 0,
    folds: int = 10,
    on_score: Callable[[ModelVersion, CVScore], None] | None = None,
) -> dict[str, Any]:
    """Choose, fit and write one version; returns its manifest."""
    dataset = load_dataset(data_path, version)
    _check_ranges(dataset)
    oof = out_of_fold(dataset.X, dataset.y, _lot_column(dataset), seed=seed, folds=folds)
    scores = _scores(dataset.y, oof, CANDIDATES)
    if on_score is not None:
        for score in scores:
            on_score(version, score)  # progress: each candidate's CV score
    chosen = select(scores)
    candidate = next(c for c in CANDIDATES if c.name == chosen.name)
    interval = interval_report(dataset, candidate, oof, seed=seed, folds=folds)
    estimator = candidate.build(seed, _lot_column(dataset), dataset.X.shape[1])
    estimator.fit(dataset.X, dataset.y)
    if plan_for(estimator) is None:  # plan=True promised one: serving needs it
        raise ValueError(f"{version}: {chosen.name} fitted to a model ml.plan_compiler cannot plan")
    manifest = build_manifest(
        dataset, estimator, scores, chosen, seed=seed, folds=folds, interval=interval
    )
    return save_artifacts(model_dir, version, estimator, manifest, training_rows=dataset.X)


def train_all(
    data_path: Path,
    model_dir: Path,
    *,
    seed: int = 0,
    folds: int = 10,
    on_score: Callable[[ModelVersion, CVScore], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Train every version from ``data_path`` into ``model_dir``; manifests by version.
    ``on_score(version, score)`` hears every candidate's CV score once the version's
    cross-validation is done, before its range and its final fit."""
    return {
        version: train_version(
            data_path, model_dir, version, seed=seed, folds=folds, on_score=on_score
        )
        for version in MODEL_VERSIONS
    }
