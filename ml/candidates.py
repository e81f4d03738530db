"""The estimators training chooses among, as recipes (unfitted, built per fold).

Every candidate is judged by the same shuffled K-fold split of the same rows, and
the one with the lowest mean out-of-fold MAE is refitted on all rows. Whatever
tuning a candidate needs happens inside it (``RidgeCV`` picks its penalty on each
training fold) or as separate entries of this list, never on the full data.

Why these: house prices are right-skewed and act multiplicatively (an extra
bathroom adds a share of the price, not a fixed sum), so most candidates model
log(price) through ``TransformedTargetRegressor``; the lot's effect flattens as
it grows, hence log(lotsize) or a spline of it. Shallow boosted trees capture a
few interactions, and an equal-weight average of a log-linear model and boosted
trees tends to beat either on 546 rows. Plain least squares on the raw price is
the baseline every choice is reported against.

Only scikit-learn and NumPy objects go into a model (``np.log`` rather than a
function of ours), so an artifact's behaviour is fixed by its bytes and the pinned
library versions, not by whatever version of this repository unpickles it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
from sklearn.ensemble import GradientBoostingRegressor, VotingRegressor
from sklearn.linear_model import HuberRegressor, LinearRegression, RidgeCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, SplineTransformer, StandardScaler

# (seed, index of the lotsize column) -> an unfitted estimator
Builder = Callable[[int, int], Any]

BASELINE = "linear"


@dataclass(frozen=True)
class Candidate:
    name: str
    description: str
    build: Builder
    # For an equal-weight average: the members' names. Cross-validation reuses their
    # out-of-fold predictions, which is exactly what the refitted average computes.
    average_of: tuple[str, ...] = ()


def _log_target(regressor: Any) -> TransformedTargetRegressor:
    return TransformedTargetRegressor(regressor=regressor, func=np.log, inverse_func=np.exp)


def _log_lotsize(lot: int) -> ColumnTransformer:
    # validate=True makes the step convert list input to float64 before np.log,
    # so the estimator also works for callers that pass plain lists.
    return ColumnTransformer(
        [("log_lotsize", FunctionTransformer(np.log, validate=True), [lot])],
        remainder="passthrough",
    )


def _lotsize_spline(lot: int) -> ColumnTransformer:
    # Constant extrapolation: beyond the training range the lot's effect stays flat
    # instead of following a cubic's tail.
    return ColumnTransformer(
        [("lotsize_spline", SplineTransformer(n_knots=4, degree=3), [lot])],
        remainder="passthrough",
    )


def _stumps(seed: int) -> GradientBoostingRegressor:
    return GradientBoostingRegressor(
        max_depth=1, n_estimators=300, learning_rate=0.1, subsample=0.8, random_state=seed
    )


def _depth2(seed: int) -> GradientBoostingRegressor:
    return GradientBoostingRegressor(
        max_depth=2, n_estimators=150, learning_rate=0.05, subsample=0.8, random_state=seed
    )


def _average(members: tuple[str, ...]) -> Builder:
    def build(seed: int, lot: int) -> VotingRegressor:
        by_name = {c.name: c for c in CANDIDATES}
        return VotingRegressor([(m, by_name[m].build(seed, lot)) for m in members])

    return build


_LOG_LINEAR_LOGLOT = "log_linear_loglot"
_LOG_GBM_STUMPS = "log_gbm_stumps"
_LOG_GBM_DEPTH2 = "log_gbm_depth2"

# Order matters only for ties: the earlier (simpler) candidate wins.
CANDIDATES: tuple[Candidate, ...] = (
    Candidate(
        BASELINE,
        "least squares on price (baseline)",
        lambda seed, lot: LinearRegression(),
    ),
    Candidate(
        "log_linear",
        "least squares on log(price)",
        lambda seed, lot: _log_target(LinearRegression()),
    ),
    Candidate(
        _LOG_LINEAR_LOGLOT,
        "least squares on log(price) with log(lotsize)",
        lambda seed, lot: _log_target(make_pipeline(_log_lotsize(lot), LinearRegression())),
    ),
    Candidate(
        "log_ridge_loglot",
        "ridge on log(price) with log(lotsize), standardised; penalty by RidgeCV per fold",
        lambda seed, lot: _log_target(
            make_pipeline(
                _log_lotsize(lot), StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13))
            )
        ),
    ),
    Candidate(
        "log_huber_loglot",
        "Huber regression on log(price) with log(lotsize), standardised",
        lambda seed, lot: _log_target(
            make_pipeline(_log_lotsize(lot), StandardScaler(), HuberRegressor(max_iter=1000))
        ),
    ),
    Candidate(
        "log_linear_lotspline",
        "least squares on log(price) with a cubic spline of lotsize (4 knots)",
        lambda seed, lot: _log_target(make_pipeline(_lotsize_spline(lot), LinearRegression())),
    ),
    Candidate(
        "gbm_default",
        "GradientBoostingRegressor with scikit-learn's defaults on price (reference)",
        lambda seed, lot: GradientBoostingRegressor(random_state=seed),
    ),
    Candidate(
        _LOG_GBM_STUMPS,
        "gradient-boosted stumps on log(price): depth 1, 300 trees, rate 0.1, subsample 0.8",
        lambda seed, lot: _log_target(_stumps(seed)),
    ),
    Candidate(
        _LOG_GBM_DEPTH2,
        "gradient boosting on log(price): depth 2, 150 trees, rate 0.05, subsample 0.8",
        lambda seed, lot: _log_target(_depth2(seed)),
    ),
    Candidate(
        "avg_loglinear_stumps",
        "equal-weight average of log_linear_loglot and log_gbm_stumps",
        _average((_LOG_LINEAR_LOGLOT, _LOG_GBM_STUMPS)),
        average_of=(_LOG_LINEAR_LOGLOT, _LOG_GBM_STUMPS),
    ),
    Candidate(
        "avg_loglinear_depth2",
        "equal-weight average of log_linear_loglot and log_gbm_depth2",
        _average((_LOG_LINEAR_LOGLOT, _LOG_GBM_DEPTH2)),
        average_of=(_LOG_LINEAR_LOGLOT, _LOG_GBM_DEPTH2),
    ),
)
