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

Issue 18 added four more, each under the same protocol: pairwise interactions in the
ridge, a deeper boosted model (depth 3, the best of a small grid on these folds),
histogram boosting with prices forced to rise with lot size, rooms and garage places
(``monotonic_cst``), and that model averaged with the ridge. None beat the models in
service (README, "Models"); they stay, so every manifest shows what was tried.

A candidate with ``plan=False`` is scored and reported but never chosen: the server
answers from a plan (``ml.plan_compiler.plan_for``), which has no operation for
``SplineTransformer``, ``PolynomialFeatures`` or histogram boosting.
``tests/ml/test_plan.py`` fits every candidate and checks that its flag tells the truth.

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
from sklearn.ensemble import (
    GradientBoostingRegressor,
    HistGradientBoostingRegressor,
    VotingRegressor,
)
from sklearn.linear_model import HuberRegressor, LinearRegression, RidgeCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    PolynomialFeatures,
    SplineTransformer,
    StandardScaler,
)

from ml.features import NUMERIC

# (seed, index of the lotsize column, number of columns) -> an unfitted estimator
Builder = Callable[[int, int, int], Any]

BASELINE = "linear"


@dataclass(frozen=True)
class Candidate:
    name: str
    description: str
    build: Builder
    # For an equal-weight average: the members' names. Cross-validation reuses their
    # out-of-fold predictions, which is exactly what the refitted average computes.
    average_of: tuple[str, ...] = ()
    # Whether ml.plan_compiler compiles the fitted model to a plan; only those may be chosen.
    plan: bool = True


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


def _depth3(seed: int) -> GradientBoostingRegressor:
    return GradientBoostingRegressor(
        max_depth=3,
        n_estimators=100,
        learning_rate=0.05,
        subsample=0.8,
        min_samples_leaf=20,
        random_state=seed,
    )


def _monotone(seed: int, width: int) -> HistGradientBoostingRegressor:
    # Prices may only rise with lot size, bedrooms, bathrooms, stories and garage places
    # (ml.features.NUMERIC, the columns every version starts with); amenities are free.
    constraints = [1 if j < len(NUMERIC) else 0 for j in range(width)]
    return HistGradientBoostingRegressor(
        max_depth=3,
        max_leaf_nodes=8,
        max_iter=200,
        learning_rate=0.05,
        min_samples_leaf=20,
        l2_regularization=1.0,
        monotonic_cst=constraints,
        early_stopping=False,
        random_state=seed,
    )


def _average(members: tuple[str, ...]) -> Builder:
    def build(seed: int, lot: int, width: int) -> VotingRegressor:
        by_name = {c.name: c for c in CANDIDATES}
        return VotingRegressor([(m, by_name[m].build(seed, lot, width)) for m in members])

    return build


_LOG_LINEAR_LOGLOT = "log_linear_loglot"
_LOG_RIDGE_LOGLOT = "log_ridge_loglot"
_LOG_GBM_STUMPS = "log_gbm_stumps"
_LOG_GBM_DEPTH2 = "log_gbm_depth2"
_LOG_HIST_GBM_MONOTONE = "log_hist_gbm_monotone"

# Order matters only for ties: the earlier (simpler) candidate wins.
CANDIDATES: tuple[Candidate, ...] = (
    Candidate(
        BASELINE,
        "least squares on price (baseline)",
        lambda seed, lot, width: LinearRegression(),
    ),
    Candidate(
        "log_linear",
        "least squares on log(price)",
        lambda seed, lot, width: _log_target(LinearRegression()),
    ),
    Candidate(
        _LOG_LINEAR_LOGLOT,
        "least squares on log(price) with log(lotsize)",
        lambda seed, lot, width: _log_target(make_pipeline(_log_lotsize(lot), LinearRegression())),
    ),
    Candidate(
        _LOG_RIDGE_LOGLOT,
        "ridge on log(price) with log(lotsize), standardised; penalty by RidgeCV per fold",
        lambda seed, lot, width: _log_target(
            make_pipeline(
                _log_lotsize(lot), StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13))
            )
        ),
    ),
    Candidate(
        "log_huber_loglot",
        "Huber regression on log(price) with log(lotsize), standardised",
        lambda seed, lot, width: _log_target(
            make_pipeline(_log_lotsize(lot), StandardScaler(), HuberRegressor(max_iter=1000))
        ),
    ),
    Candidate(
        "log_linear_lotspline",
        "least squares on log(price) with a cubic spline of lotsize (4 knots)",
        lambda seed, lot, width: _log_target(
            make_pipeline(_lotsize_spline(lot), LinearRegression())
        ),
        plan=False,
    ),
    Candidate(
        "gbm_default",
        "GradientBoostingRegressor with scikit-learn's defaults on price (reference)",
        lambda seed, lot, width: GradientBoostingRegressor(random_state=seed),
    ),
    Candidate(
        _LOG_GBM_STUMPS,
        "gradient-boosted stumps on log(price): depth 1, 300 trees, rate 0.1, subsample 0.8",
        lambda seed, lot, width: _log_target(_stumps(seed)),
    ),
    Candidate(
        _LOG_GBM_DEPTH2,
        "gradient boosting on log(price): depth 2, 150 trees, rate 0.05, subsample 0.8",
        lambda seed, lot, width: _log_target(_depth2(seed)),
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
    Candidate(
        "log_ridge_loglot_pairs",
        "log_ridge_loglot plus every pairwise product of the standardised features",
        lambda seed, lot, width: _log_target(
            make_pipeline(
                _log_lotsize(lot),
                StandardScaler(),
                PolynomialFeatures(2, interaction_only=True, include_bias=False),
                RidgeCV(alphas=np.logspace(-3, 3, 13)),
            )
        ),
        plan=False,
    ),
    Candidate(
        "log_gbm_depth3",
        "gradient boosting on log(price): depth 3, 100 trees, rate 0.05, subsample 0.8, "
        "20 rows per leaf (the best of six settings tried on these folds)",
        lambda seed, lot, width: _log_target(_depth3(seed)),
    ),
    Candidate(
        _LOG_HIST_GBM_MONOTONE,
        "histogram gradient boosting on log(price), rising with lotsize, bedrooms, bathrms, "
        "stories and garagepl (monotonic_cst): depth 3, 8 leaves, 200 iterations, rate 0.05",
        lambda seed, lot, width: _log_target(_monotone(seed, width)),
        plan=False,
    ),
    Candidate(
        "avg_ridge_hist_monotone",
        "equal-weight average of log_ridge_loglot and log_hist_gbm_monotone",
        _average((_LOG_RIDGE_LOGLOT, _LOG_HIST_GBM_MONOTONE)),
        average_of=(_LOG_RIDGE_LOGLOT, _LOG_HIST_GBM_MONOTONE),
        plan=False,
    ),
)
