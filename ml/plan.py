"""Prediction plans: a fitted model's arithmetic as JSON data, replayed with NumPy alone.

Why: serving from the pickled scikit-learn model means importing scikit-learn in
every worker (~100 MiB RSS each) and paying its per-call validation at every layer
(~0.3 ms per row). Training writes a *plan* instead (``ml.plan_compiler.plan_for``): a
small tree of operations and their numbers, checked against the model's own
``predict`` before it is saved. Loading one parses JSON and validates it strictly
(no pickle, no eval, no imports): anything unexpected raises :class:`PlanError`.

A plan is ``{"format": PLAN_FORMAT, "n_features": w, "predict": <predictor>}``.

Predictors map (n, w) -> (n,):
  ``log_target{inner}``, ``pipeline{transforms, final}``, ``linear{coef, intercept}``,
  ``average{parts}``, ``gbm{init, learning_rate, trees}``.
Transforms map (n, w) -> (n, w'):
  ``columns{parts: [{columns, transform}]}``, ``log``, ``identity``, ``scale{mean, scale}``.

Each op replays the operations scikit-learn performs, in the same order, so the
answers equal ``predict``'s (boosted trees bit for bit; linear parts to 1e-12,
as their dot product is summed row-wise on purpose: see :func:`_linear`), and a
row's answer never depends on the batch it arrives in.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ml.features import FEATURES, ModelVersion, allowed_range

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
Float32Array = npt.NDArray[np.float32]
Predictor = Callable[[FloatArray], FloatArray]
Transform = Callable[[FloatArray], FloatArray]

PLAN_FORMAT = "housing-api prediction plan 1"
MAX_PLAN_BYTES = 64 * 1024 * 1024
MAX_NESTING = 32  # ops inside ops
MAX_WIDTH = 10_000  # columns at any point
MAX_TREES = 10_000
# Trees are evaluated padded to perfect binary trees (2**depth leaves each), so
# depth is capped; deeper boosted trees get no plan and keep scikit-learn's predict.
MAX_TREE_DEPTH = 8
_MAX_NODES = 2 ** (MAX_TREE_DEPTH + 1) - 1


class PlanError(ValueError):
    """A plan is malformed; the message says where (a path into the JSON) and what."""


# --- the operations ---------------------------------------------------------------------


def log_target(inner: Predictor) -> Predictor:
    def predict(X: FloatArray) -> FloatArray:
        # TransformedTargetRegressor applies exp to a (n, 1) column and squeezes it:
        # the same values as exp on the (n,) vector, without two views per call.
        return np.exp(inner(X))

    return predict


def pipeline(transforms: Sequence[Transform], final: Predictor) -> Predictor:
    chain = tuple(transforms)

    def predict(X: FloatArray) -> FloatArray:
        for transform in chain:
            X = transform(X)
        return final(X)

    return predict


def columns(parts: Sequence[tuple[list[int], Transform]]) -> Transform:
    chosen = tuple((list(cols), func) for cols, func in parts)

    def transform(X: FloatArray) -> FloatArray:
        # ColumnTransformer: X[:, columns] per part (sklearn's _safe_indexing), then hstack
        # (np.concatenate on axis 1 is what hstack does for 2-D parts, minus its checks).
        return np.concatenate([func(X[:, cols]) for cols, func in chosen], axis=1)

    return transform


def identity(X: FloatArray) -> FloatArray:
    return X


def log(X: FloatArray) -> FloatArray:
    return np.log(X)


def scale(mean: FloatArray, scale_: FloatArray) -> Transform:
    def transform(X: FloatArray) -> FloatArray:
        # StandardScaler.transform on a copy: X -= mean_; X /= scale_
        Z: FloatArray = X - mean
        Z /= scale_
        return Z

    return transform


def linear(coef: FloatArray, intercept: float) -> Predictor:
    return lambda X: _linear(X, coef, intercept)


def _linear(X: FloatArray, coef: FloatArray, intercept: float) -> FloatArray:
    # Not ``X @ coef`` as scikit-learn does: BLAS sums a one-row product in a different
    # order than a many-row one, so a batch would differ from the same rows sent one by
    # one in the last bits. A row-wise reduction is the same arithmetic whatever the
    # batch size (within 1e-12 of sklearn). C order matters too: numpy reduces an
    # F-ordered matrix column by column.
    return (np.ascontiguousarray(X) * coef).sum(axis=1) + intercept  # type: ignore[no-any-return]


def average(parts: Sequence[Predictor]) -> Predictor:
    members = tuple(parts)
    if not 0 < len(members) < 8:
        raise PlanError("an average takes 1 to 7 parts")
    first, rest, count = members[0], members[1:], float(len(members))

    def predict(X: FloatArray) -> FloatArray:
        # VotingRegressor.predict is np.average(np.asarray([...]).T, axis=1): numpy adds
        # fewer than 8 values per row in order, then divides; so does this, bit for bit,
        # without stacking and transposing the parts on every call.
        total = first(X).copy()
        for part in rest:
            total += part(X)
        return total / count

    return predict


@dataclass(frozen=True)
class Tree:
    """One regression tree as scikit-learn stores it; a leaf has left == right == -1."""

    feature: IntArray
    threshold: FloatArray
    left: IntArray
    right: IntArray
    value: FloatArray


# Up to this many rows every tree is evaluated at once and the stages are summed by a
# cumsum; above it, trees go in blocks (bounded temporaries, no page faults) and the
# stages are summed by a running sum. Both add the same numbers in the same order.
_SMALL_BATCH = 64
_ROW_CHUNK = 2048
_BLOCK_LEAVES = 128  # trees per block times leaves per padded tree


@dataclass(frozen=True)
class _Block:
    steps: FloatArray  # (trees, 2**depth, 1): learning_rate * leaf value
    # Bottom-up: (features (trees * 2**level,), float32 thresholds (same, 1), shape).
    levels: tuple[tuple[IntArray, Float32Array, tuple[int, int, int]], ...]


def gbm(init: float, learning_rate: float, trees: Sequence[Tree]) -> Predictor:
    """``GradientBoostingRegressor.predict`` (squared error, mean init), exactly.

    scikit-learn casts X to float32, sends a row left when ``x <= threshold`` (the
    float32 value compared as a double) and adds ``learning_rate * leaf`` to the init
    constant stage after stage. Here every tree is padded to a perfect tree of the
    deepest one's depth (a shallow leaf is copied to all its would-be descendants),
    the leaf is chosen bottom-up with ``np.where`` over all nodes, comparisons run in
    float32 against each threshold rounded down to float32 (``x32 > t`` exactly when
    ``x32 > floor32(t)``), and stages are added in stage order.
    """
    depth = max(_depth(t) for t in trees)
    n_trees = len(trees)
    features = [np.zeros((n_trees, 2**level), dtype=np.intp) for level in range(depth)]
    thresholds = [np.zeros((n_trees, 2**level)) for level in range(depth)]
    leaves = np.zeros((n_trees, 2**depth))
    for i, tree in enumerate(trees):
        stack = [(0, 0, 0)]  # node, level, position within the level
        while stack:
            node, level, pos = stack.pop()
            if tree.left[node] == -1:
                span = 2 ** (depth - level)
                leaves[i, pos * span : (pos + 1) * span] = tree.value[node]
                continue  # padding nodes keep feature 0, threshold 0: both sides agree
            features[level][i, pos] = tree.feature[node]
            thresholds[level][i, pos] = tree.threshold[node]
            stack.append((int(tree.left[node]), level + 1, 2 * pos))
            stack.append((int(tree.right[node]), level + 1, 2 * pos + 1))
    steps = learning_rate * leaves  # the product predict_stages forms per stage

    def block(a: int, b: int) -> _Block:
        levels = tuple(
            (
                features[level][a:b].reshape(-1),
                _floor32(thresholds[level][a:b]).reshape(-1, 1),
                (b - a, 2**level, -1),
            )
            for level in reversed(range(depth))
        )
        return _Block(steps[a:b, :, None], levels)

    whole = block(0, n_trees)
    per_block = max(1, _BLOCK_LEAVES >> depth)
    blocks = [block(a, min(n_trees, a + per_block)) for a in range(0, n_trees, per_block)]

    def predict(X: FloatArray) -> FloatArray:
        n = X.shape[0]
        Xt = np.ascontiguousarray(X.T, dtype=np.float32)  # scikit-learn's float32 cast
        if n <= _SMALL_BATCH:
            stages = np.empty((n_trees + 1, n))
            stages[0] = init
            stages[1:] = _leaf_steps(Xt, whole)
            return np.cumsum(stages, axis=0)[-1]  # type: ignore[no-any-return]
        out = np.empty(n)
        for start in range(0, n, _ROW_CHUNK):
            part = np.ascontiguousarray(Xt[:, start : start + _ROW_CHUNK])
            raw = np.full(part.shape[1], init)
            for b in blocks:
                for row in _leaf_steps(part, b):
                    raw += row
            out[start : start + _ROW_CHUNK] = raw
        return out

    return predict


def _leaf_steps(Xt: Float32Array, block: _Block) -> FloatArray:
    """(trees, rows) scaled leaf values, chosen level by level from the bottom up."""
    V = block.steps
    for feature, threshold, shape in block.levels:
        goes_right = (Xt[feature] > threshold).reshape(shape)
        V = np.where(goes_right, V[:, 1::2], V[:, 0::2])
    return V[:, 0]


def _floor32(t: FloatArray) -> Float32Array:
    """The largest float32 <= t, elementwise."""
    with np.errstate(over="ignore"):
        t32 = t.astype(np.float32)
    above = t32.astype(np.float64) > t
    t32[above] = np.nextafter(t32[above], np.float32(-np.inf))
    return t32


def _depth(tree: Tree) -> int:
    deepest, stack = 0, [(0, 0)]
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        if tree.left[node] != -1:
            stack += [(int(tree.left[node]), d + 1), (int(tree.right[node]), d + 1)]
    return deepest


# --- JSON in and out ------------------------------------------------------------------


def plan_to_json(plan: dict[str, Any]) -> bytes:
    """Compact, deterministic JSON; Python's float repr round-trips every float64."""
    return json.dumps(plan, allow_nan=False, separators=(",", ":")).encode("utf-8")


def load_plan(data: bytes, *, n_features: int | None = None) -> Predictor:
    """The predictor a plan describes, after validating all of it; else PlanError."""
    if len(data) > MAX_PLAN_BYTES:
        raise PlanError(f"larger than {MAX_PLAN_BYTES} bytes")
    try:
        plan = json.loads(
            data.decode("utf-8"), parse_constant=_no_constant, object_pairs_hook=_no_duplicates
        )
    except PlanError:
        raise
    except ValueError as exc:  # also UnicodeDecodeError, and ints too long to convert
        raise PlanError(f"not valid JSON ({exc})") from exc
    except RecursionError as exc:
        raise PlanError("nested too deeply") from exc
    _keys(plan, "plan", {"format", "n_features", "predict"})
    if plan["format"] != PLAN_FORMAT:
        raise PlanError(f"format: {plan['format']!r}, expected {PLAN_FORMAT!r}")
    width = _int(plan["n_features"], "n_features", 1, MAX_WIDTH)
    if n_features is not None and width != n_features:
        raise PlanError(f"n_features: {width}, expected {n_features}")
    return _Loader().predictor(plan["predict"], "predict", width, 0)


def _no_constant(name: str) -> Any:
    raise PlanError(f"{name} is not a number a plan may hold")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise PlanError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _keys(node: Any, where: str, expected: set[str]) -> dict[str, Any]:
    if not isinstance(node, dict):
        raise PlanError(f"{where}: expected an object")
    if set(node) != expected:
        raise PlanError(f"{where}: keys {sorted(node)}, expected {sorted(expected)}")
    return node


def _int(value: Any, where: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise PlanError(f"{where}: expected an integer in [{low}, {high}], got {value!r}")
    return value


def _float(value: Any, where: str) -> float:
    if type(value) is not float or not math.isfinite(value):
        raise PlanError(f"{where}: expected a finite number, got {value!r}")
    return value


def _list(value: Any, where: str, low: int, high: int) -> list[Any]:
    if not isinstance(value, list) or not low <= len(value) <= high:
        raise PlanError(f"{where}: expected a list of {low} to {high} items")
    return value


def _floats(value: Any, where: str, length: int) -> FloatArray:
    items = _list(value, where, length, length)
    for i, v in enumerate(items):
        _float(v, f"{where}[{i}]")
    return np.array(items, dtype=np.float64)


def _ints(value: Any, where: str, length: int, low: int, high: int) -> IntArray:
    items = _list(value, where, length, length)
    for i, v in enumerate(items):
        _int(v, f"{where}[{i}]", low, high)
    return np.array(items, dtype=np.intp)


class _Loader:
    """Validates node by node while building, tracking the width of X at each point."""

    def predictor(self, node: Any, where: str, width: int, nesting: int) -> Predictor:
        op = self._op(node, where, nesting)
        if op == "log_target":
            _keys(node, where, {"op", "inner"})
            return log_target(self.predictor(node["inner"], f"{where}.inner", width, nesting + 1))
        if op == "pipeline":
            _keys(node, where, {"op", "transforms", "final"})
            transforms = []
            for i, step in enumerate(_list(node["transforms"], f"{where}.transforms", 0, 64)):
                func, width = self.transform(step, f"{where}.transforms[{i}]", width, nesting + 1)
                transforms.append(func)
            final = self.predictor(node["final"], f"{where}.final", width, nesting + 1)
            return pipeline(transforms, final)
        if op == "linear":
            _keys(node, where, {"op", "coef", "intercept"})
            coef = _floats(node["coef"], f"{where}.coef", width)
            return linear(coef, _float(node["intercept"], f"{where}.intercept"))
        if op == "average":
            _keys(node, where, {"op", "parts"})
            parts = _list(node["parts"], f"{where}.parts", 1, 7)
            return average(
                [
                    self.predictor(p, f"{where}.parts[{i}]", width, nesting + 1)
                    for i, p in enumerate(parts)
                ]
            )
        if op == "gbm":
            _keys(node, where, {"op", "init", "learning_rate", "trees"})
            trees = _list(node["trees"], f"{where}.trees", 1, MAX_TREES)
            return gbm(
                _float(node["init"], f"{where}.init"),
                _float(node["learning_rate"], f"{where}.learning_rate"),
                [_tree(t, f"{where}.trees[{i}]", width) for i, t in enumerate(trees)],
            )
        raise PlanError(f"{where}: unknown predictor op {op!r}")

    def transform(self, node: Any, where: str, width: int, nesting: int) -> tuple[Transform, int]:
        op = self._op(node, where, nesting)
        if op in ("log", "identity"):
            _keys(node, where, {"op"})
            return (log if op == "log" else identity), width
        if op == "scale":
            _keys(node, where, {"op", "mean", "scale"})
            spread = _floats(node["scale"], f"{where}.scale", width)
            if not np.all(spread != 0):
                raise PlanError(f"{where}.scale: zero")
            return scale(_floats(node["mean"], f"{where}.mean", width), spread), width
        if op == "columns":
            _keys(node, where, {"op", "parts"})
            parts, out = [], 0
            for i, part in enumerate(_list(node["parts"], f"{where}.parts", 1, 64)):
                at = f"{where}.parts[{i}]"
                _keys(part, at, {"columns", "transform"})
                cols = _ints(part["columns"], f"{at}.columns", len(part["columns"]), 0, width - 1)
                if len(cols) == 0:
                    raise PlanError(f"{at}.columns: empty")
                func, w = self.transform(
                    part["transform"], f"{at}.transform", len(cols), nesting + 1
                )
                parts.append((cols.tolist(), func))
                out += w
            if out > MAX_WIDTH:
                raise PlanError(f"{where}: more than {MAX_WIDTH} columns")
            return columns(parts), out
        raise PlanError(f"{where}: unknown transform op {op!r}")

    @staticmethod
    def _op(node: Any, where: str, nesting: int) -> Any:
        if nesting > MAX_NESTING:
            raise PlanError(f"{where}: nested deeper than {MAX_NESTING}")
        if not isinstance(node, dict) or "op" not in node:
            raise PlanError(f"{where}: expected an object with an op")
        return node["op"]


def _tree(node: Any, where: str, width: int) -> Tree:
    _keys(node, where, {"feature", "threshold", "left", "right", "value"})
    m = len(_list(node["left"], f"{where}.left", 1, _MAX_NODES))
    left = _ints(node["left"], f"{where}.left", m, -1, m - 1)
    right = _ints(node["right"], f"{where}.right", m, -1, m - 1)
    feature = _ints(node["feature"], f"{where}.feature", m, -1, width - 1)
    threshold = _floats(node["threshold"], f"{where}.threshold", m)
    value = _floats(node["value"], f"{where}.value", m)
    parents = np.zeros(m, dtype=np.intp)
    for i in range(m):
        if (left[i] == -1) != (right[i] == -1):
            raise PlanError(f"{where}: node {i} has one child")
        leaf = left[i] == -1
        if leaf != (feature[i] == -1):
            raise PlanError(
                f"{where}.feature[{i}]: {feature[i]} for a {'leaf' if leaf else 'split'}"
            )
        # Children after their parent, one parent each: a tree rooted at 0, no cycles.
        if not leaf:
            if not (left[i] > i and right[i] > i and left[i] != right[i]):
                raise PlanError(f"{where}: node {i} has children {left[i]}, {right[i]}")
            parents[left[i]] += 1
            parents[right[i]] += 1
    if parents[0] != 0 or not np.all(parents[1:] == 1):
        raise PlanError(f"{where}: not a tree (every node but the root needs one parent)")
    tree = Tree(feature, threshold, left, right, value)
    if _depth(tree) > MAX_TREE_DEPTH:
        raise PlanError(f"{where}: deeper than {MAX_TREE_DEPTH}")
    return tree


# --- probe rows -------------------------------------------------------------------------


def probe_rows(version: ModelVersion, n: int = 256, seed: int = 0) -> FloatArray:
    """Random rows inside the allowed input ranges, plus the all-low and all-high corners.

    Used to confirm a compiled predictor answers exactly as the model does.
    """
    rng = np.random.default_rng(seed)
    cols = []
    for feature in FEATURES[version]:
        low, high = allowed_range(feature)
        if feature.kind == "float":
            values = rng.uniform(low, high, n)
        else:
            values = rng.integers(low, high, n, endpoint=True).astype(np.float64)
        cols.append(np.concatenate([[low, high], values]))
    return np.column_stack(cols).astype(np.float64)
