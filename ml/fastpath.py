"""A per-request predictor that skips scikit-learn's per-call overhead, not its answers.

scikit-learn re-validates its input at every layer of a fitted model on every call
(``TransformedTargetRegressor`` -> ``Pipeline`` -> ``ColumnTransformer`` -> the
linear model). For one row that costs around a millisecond while the arithmetic
is a handful of floating-point operations. :func:`compile_predictor` walks the
fitted model and, for the parts it recognises exactly (log/exp target transform,
pipelines of ``np.log`` column transforms and standard scaling, linear models,
equal-weight averages), replays the same NumPy operations in the same order, so
the result equals ``model.predict`` to 1e-12 relative and, unlike scikit-learn's
BLAS product, a row's answer does not depend on the size of its batch. Any part it does not
recognise (boosted trees, splines) keeps its own ``predict``, validation included.

The caller still checks the input (float64, shape, finite, in range) once, and
``ml.artifacts.load_verified`` compares the compiled predictor with the model's
own ``predict`` on probe rows before using it, falling back to ``predict`` if the
two ever differ (for instance after a scikit-learn upgrade changes an internal).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
from sklearn.ensemble import VotingRegressor
from sklearn.linear_model import HuberRegressor, LinearRegression, Ridge, RidgeCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from ml.features import FEATURES, ModelVersion, allowed_range

FloatArray = npt.NDArray[np.float64]
Predictor = Callable[[FloatArray], FloatArray]
Transform = Callable[[FloatArray], FloatArray]

# Exact types on purpose: a subclass may override predict or transform.
_LINEAR = (LinearRegression, Ridge, RidgeCV, HuberRegressor)


def compile_predictor(estimator: Any) -> Predictor | None:
    """A fast equivalent of ``estimator.predict``, or None if we cannot replay it."""
    kind = type(estimator)
    if kind is TransformedTargetRegressor:
        return _compile_log_target(estimator)
    if kind is Pipeline:
        return _compile_pipeline(estimator)
    if kind in _LINEAR:
        return _compile_linear(estimator)
    if kind is VotingRegressor and estimator.weights is None:
        parts = [_compiled_or_own(e) for e in estimator.estimators_]

        def average(X: FloatArray) -> FloatArray:
            # VotingRegressor.predict: np.average(np.asarray([...]).T, axis=1)
            return np.average(np.asarray([p(X) for p in parts]).T, axis=1)

        return average
    return None


def _compiled_or_own(estimator: Any) -> Predictor:
    compiled = compile_predictor(estimator)
    own: Predictor = estimator.predict
    return compiled if compiled is not None else own


def _compile_log_target(ttr: Any) -> Predictor | None:
    if not (
        ttr.transformer is None
        and ttr.func is np.log
        and ttr.inverse_func is np.exp
        and getattr(ttr, "_training_dim", None) == 1
    ):
        return None
    inner = _compiled_or_own(ttr.regressor_)

    def predict(X: FloatArray) -> FloatArray:
        # TransformedTargetRegressor applies exp to a (n, 1) column and squeezes it.
        return np.exp(inner(X).reshape(-1, 1)).squeeze(axis=1)

    return predict


def _compile_linear(model: Any) -> Predictor | None:
    coef = model.coef_
    if coef.ndim != 1:
        return None
    intercept = model.intercept_

    def predict(X: FloatArray) -> FloatArray:
        # Not ``X @ coef`` as scikit-learn does: BLAS sums a one-row product in a
        # different order than a many-row one, so a batch would differ from the
        # same rows sent one by one in the last bits. A row-wise reduction is the
        # same arithmetic whatever the batch size (within 1e-12 of sklearn).
        # C order matters too: numpy reduces an F-ordered matrix column by column.
        return (np.ascontiguousarray(X) * coef).sum(axis=1) + intercept  # type: ignore[no-any-return]

    return predict


def _compile_pipeline(pipeline: Any) -> Predictor | None:
    steps = [step for _, step in pipeline.steps if step is not None and step != "passthrough"]
    if not steps:
        return None
    transforms = [_compile_transform(step) for step in steps[:-1]]
    if any(t is None for t in transforms):
        return None
    final = _compiled_or_own(steps[-1])
    chain = [t for t in transforms if t is not None]

    def predict(X: FloatArray) -> FloatArray:
        for transform in chain:
            X = transform(X)
        return final(X)

    return predict


def _compile_transform(step: Any) -> Transform | None:
    kind = type(step)
    if kind is FunctionTransformer:
        return _compile_function(step)
    if kind is StandardScaler:
        return _compile_scaler(step)
    if kind is ColumnTransformer:
        return _compile_columns(step)
    return None


def _default_output(step: Any) -> bool:
    """True unless ``set_output`` asked this step for pandas or polars output."""
    config = getattr(step, "_sklearn_output_config", None) or {}
    return all(value == "default" for value in config.values())


def _compile_function(ft: Any) -> Transform | None:
    if ft.kw_args or not _default_output(ft):
        return None
    if ft.func is None:
        return lambda X: X
    if ft.func is np.log:
        return np.log  # type: ignore[no-any-return]  # a ufunc is a fine Transform
    return None


def _compile_scaler(scaler: Any) -> Transform | None:
    if not (scaler.with_mean and scaler.with_std) or scaler.scale_ is None:
        return None
    mean, scale = scaler.mean_, scaler.scale_

    def transform(X: FloatArray) -> FloatArray:
        # StandardScaler.transform on a copy: X -= mean_; X /= scale_
        Z: FloatArray = X - mean
        Z /= scale
        return Z

    return transform


def _compile_columns(ct: Any) -> Transform | None:
    if ct.sparse_output_ or not _default_output(ct):
        return None
    parts: list[tuple[list[int], Transform]] = []
    for _, trans, columns in ct.transformers_:
        if trans == "drop" or (isinstance(columns, list) and not columns):
            continue
        if not (isinstance(columns, list) and all(type(c) is int for c in columns)):
            return None
        func = (lambda X: X) if trans == "passthrough" else _compile_transform(trans)
        if func is None:
            return None
        parts.append((columns, func))
    if not parts:
        return None

    def transform(X: FloatArray) -> FloatArray:
        # ColumnTransformer: X[:, columns] per part (sklearn's _safe_indexing), then hstack.
        return np.hstack([func(X[:, columns]) for columns, func in parts])

    return transform


def probe_rows(version: ModelVersion, n: int = 256, seed: int = 0) -> FloatArray:
    """Random rows inside the allowed input ranges, plus the all-low and all-high corners.

    Used to confirm a compiled predictor answers exactly as the model does.
    """
    rng = np.random.default_rng(seed)
    columns = []
    for feature in FEATURES[version]:
        low, high = allowed_range(feature)
        if feature.kind == "float":
            values = rng.uniform(low, high, n)
        else:
            values = rng.integers(low, high, n, endpoint=True).astype(np.float64)
        columns.append(np.concatenate([[low, high], values]))
    return np.column_stack(columns).astype(np.float64)
