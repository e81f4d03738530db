"""Turn a fitted scikit-learn model into a prediction plan (``ml.plan``).

scikit-learn re-validates its input at every layer of a fitted model on every call
(``VotingRegressor`` -> ``TransformedTargetRegressor`` -> ``Pipeline`` ->
``ColumnTransformer`` -> the linear model or the boosted trees). For one row that
costs far more than the arithmetic. :func:`plan_for` walks the fitted model and,
when it recognises every part exactly (log/exp target transform, pipelines of
``np.log`` column transforms and standard scaling, linear models, equal-weight
averages, squared-error gradient boosting), writes down the same operations as a
plan; ``ml.plan`` replays them with NumPy in the same order. Anything else gets no
plan, and the model keeps its own ``predict``.

This module imports scikit-learn: training uses it, and so does loading an artifact
that has no plan. Serving a plan does not.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
from sklearn.dummy import DummyRegressor
from sklearn.ensemble import GradientBoostingRegressor, VotingRegressor
from sklearn.linear_model import HuberRegressor, LinearRegression, Ridge, RidgeCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.tree import DecisionTreeRegressor

from ml.plan import (
    MAX_TREE_DEPTH,
    PLAN_FORMAT,
    Predictor,
    load_plan,
    plan_to_json,
    probe_rows,
)

__all__ = ["compile_predictor", "plan_for", "probe_rows"]

Node = dict[str, Any]

# Exact types on purpose: a subclass may override predict or transform.
_LINEAR = (LinearRegression, Ridge, RidgeCV, HuberRegressor)


def plan_for(estimator: Any) -> Node | None:
    """A plan replaying ``estimator.predict``, or None if some part is not recognised."""
    width = getattr(estimator, "n_features_in_", None)
    node = _predictor(estimator)
    if node is None or not isinstance(width, int | np.integer):
        return None
    return {"format": PLAN_FORMAT, "n_features": int(width), "predict": node}


def compile_predictor(estimator: Any) -> Predictor | None:
    """A fast equivalent of ``estimator.predict`` (its plan, loaded), or None."""
    plan = plan_for(estimator)
    return None if plan is None else load_plan(plan_to_json(plan))


def _predictor(estimator: Any) -> Node | None:
    kind = type(estimator)
    if kind is TransformedTargetRegressor:
        return _log_target(estimator)
    if kind is Pipeline:
        return _pipeline(estimator)
    if kind in _LINEAR:
        return _linear(estimator)
    if kind is VotingRegressor and estimator.weights is None:
        parts = [_predictor(e) for e in estimator.estimators_]
        return None if None in parts else {"op": "average", "parts": parts}
    if kind is GradientBoostingRegressor:
        return _gbm(estimator)
    return None


def _log_target(ttr: Any) -> Node | None:
    if not (
        ttr.transformer is None
        and ttr.func is np.log
        and ttr.inverse_func is np.exp
        and getattr(ttr, "_training_dim", None) == 1
    ):
        return None
    inner = _predictor(ttr.regressor_)
    return None if inner is None else {"op": "log_target", "inner": inner}


def _linear(model: Any) -> Node | None:
    coef = np.asarray(model.coef_, dtype=np.float64)
    intercept = np.asarray(model.intercept_, dtype=np.float64)
    if coef.ndim != 1 or intercept.ndim != 0:
        return None
    return {"op": "linear", "coef": coef.tolist(), "intercept": float(intercept)}


def _pipeline(pipeline: Any) -> Node | None:
    steps = [step for _, step in pipeline.steps if step is not None and step != "passthrough"]
    if not steps:
        return None
    transforms = [_transform(step) for step in steps[:-1]]
    final = _predictor(steps[-1])
    if final is None or None in transforms:
        return None
    return {"op": "pipeline", "transforms": transforms, "final": final}


def _transform(step: Any) -> Node | None:
    kind = type(step)
    if kind is FunctionTransformer:
        return _function(step)
    if kind is StandardScaler:
        return _scaler(step)
    if kind is ColumnTransformer:
        return _columns(step)
    return None


def _default_output(step: Any) -> bool:
    """True unless ``set_output`` asked this step for pandas or polars output."""
    config = getattr(step, "_sklearn_output_config", None) or {}
    return all(value == "default" for value in config.values())


def _function(ft: Any) -> Node | None:
    if ft.kw_args or not _default_output(ft):
        return None
    if ft.func is None:
        return {"op": "identity"}
    if ft.func is np.log:
        return {"op": "log"}
    return None


def _scaler(scaler: Any) -> Node | None:
    if not (scaler.with_mean and scaler.with_std) or scaler.scale_ is None:
        return None
    return {
        "op": "scale",
        "mean": np.asarray(scaler.mean_, dtype=np.float64).tolist(),
        "scale": np.asarray(scaler.scale_, dtype=np.float64).tolist(),
    }


def _columns(ct: Any) -> Node | None:
    if ct.sparse_output_ or not _default_output(ct):
        return None
    parts: list[Node] = []
    for _, trans, cols in ct.transformers_:
        if trans == "drop" or (isinstance(cols, list) and not cols):
            continue
        if not (isinstance(cols, list) and all(type(c) is int for c in cols)):
            return None
        func = {"op": "identity"} if trans == "passthrough" else _transform(trans)
        if func is None:
            return None
        parts.append({"columns": list(cols), "transform": func})
    return {"op": "columns", "parts": parts} if parts else None


def _gbm(gbm: Any) -> Node | None:
    """Squared error with the default mean init: ``predict`` is init + rate * trees."""
    init = gbm.init_
    if not (
        gbm.loss == "squared_error"
        and type(init) is DummyRegressor
        and init.strategy == "mean"
        and np.shape(init.constant_) == (1, 1)
        and gbm.estimators_.ndim == 2
        and gbm.estimators_.shape[1] == 1
    ):
        return None
    trees = []
    for estimator in gbm.estimators_[:, 0]:
        tree = estimator.tree_
        if (
            type(estimator) is not DecisionTreeRegressor
            or tree.n_outputs != 1
            or tree.max_depth > MAX_TREE_DEPTH
        ):
            return None
        n = tree.node_count
        leaf = tree.children_left[:n] == -1
        trees.append(
            {
                # scikit-learn marks a leaf's feature -2; a plan says -1.
                "feature": np.where(leaf, -1, tree.feature[:n]).tolist(),
                "threshold": tree.threshold[:n].astype(np.float64).tolist(),
                "left": tree.children_left[:n].tolist(),
                "right": tree.children_right[:n].tolist(),
                "value": tree.value[:n, 0, 0].astype(np.float64).tolist(),
            }
        )
    return {
        "op": "gbm",
        "init": float(init.constant_[0, 0]),
        "learning_rate": float(gbm.learning_rate),
        "trees": trees,
    }
