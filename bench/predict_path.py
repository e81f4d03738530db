"""Per-call cost of three ways to ask a trained model for prices.

Run: ``python -m bench.predict_path [--model-dir DIR] [--repeats N]`` (without
``--model-dir`` it trains into a temporary directory first, ~30 s).

1. ``list -> model.predict``: the obvious path, a Python list of lists.
2. ``float64 array -> model.predict``: ``np.array(rows, dtype=float64)`` first.
3. ``LoadedModel.predict``: the same array through the input checks and the compiled
   predictor of ``ml.plan_compiler`` (identical answers, checked here too).

Each figure is the median over ``--repeats`` runs of the mean time per call,
building the list or array included, for one row and for a 1000-row batch.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ml.artifacts import LoadedModel, load_all
from ml.dataset import load_dataset
from ml.training import train_all

BATCH = 1000


def per_call_us(action: Callable[[], Any], repeats: int, budget_s: float = 0.2) -> float:
    """Median over ``repeats`` of the mean µs per call, with enough calls per repeat."""
    start = time.perf_counter()
    action()
    first = time.perf_counter() - start
    calls = max(3, min(5000, int(budget_s / max(first, 1e-7))))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            action()
        samples.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(samples)


def bench_model(model: LoadedModel, X: np.ndarray, repeats: int) -> list[tuple[str, float, float]]:
    estimator = model.estimator
    row = [float(v) for v in X[0]]  # plain floats, as the HTTP layer builds them
    rows = [[float(v) for v in X[i % len(X)]] for i in range(BATCH)]

    def as_array(data: list[list[float]]) -> np.ndarray:
        return np.array(data, dtype=np.float64)

    paths: list[tuple[str, Callable[[list[list[float]]], Any]]] = [
        ("list -> model.predict", lambda data: estimator.predict(data)),
        ("float64 array -> model.predict", lambda data: estimator.predict(as_array(data))),
        ("LoadedModel.predict", lambda data: model.predict(as_array(data))),
    ]
    reference = estimator.predict(as_array(rows))
    for name, call in paths:
        # Same answers up to the summation order of a dot product (1e-12 relative).
        assert np.allclose(call(rows), reference, rtol=1e-12, atol=0), f"{name} answers differently"
    return [
        (
            name,
            per_call_us(partial(call, [row]), repeats),
            per_call_us(partial(call, rows), repeats),
        )
        for name, call in paths
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, help="trained models (default: train now)")
    parser.add_argument("--data", type=Path, default=Path("data/housing.csv"))
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    if args.repeats < 5:
        parser.error("--repeats must be at least 5")

    # The models stay on disk while measured: the scikit-learn estimator is unpickled
    # on first use (workers serve from the plan and never load it).
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir
        if model_dir is None:
            model_dir = Path(tmp)
            train_all(args.data, model_dir)
        models = load_all(model_dir)

        print(f"median of {args.repeats} repeats; µs per call; batch = {BATCH} rows")
        print(f"{'model':<40} {'path':<32} {'1 row':>10} {'batch':>10} {'per row':>9}")
        for version, model in models.items():
            X = load_dataset(args.data, model.version).X
            label = f"{version} {model.manifest['estimator']['name']} ({model.predict_path})"
            for name, single, batch in bench_model(model, X, args.repeats):
                per_row = batch / BATCH
                print(f"{label:<40} {name:<32} {single:>10.1f} {batch:>10.1f} {per_row:>9.2f}")


if __name__ == "__main__":
    main()
