"""What the 90% price range adds to a prediction, in process, against the issue's budget.

Run: ``python -m bench.interval_cost [--model-dir DIR] [--repeats N]`` (without
``--model-dir`` it trains into a temporary directory first, ~30 s).

Issue 18's aim: the interval costs at most 5% of a guarded single prediction, which
costs about ``--guarded-us`` (900) µs of server CPU (docs/benchmarks.md). Measured per
version, for 1 row and a 1000-row batch, each as the median over ``--repeats`` runs
of the mean µs per call:

* ``model``: ``LoadedModel.predict`` against ``predict_interval`` (the two
  multiplications on the prices; ``bounds`` is those alone).
* ``answer``: what the endpoint does after the model, without and with the range:
  ``tolist`` of the arrays, building the answer (``Prediction`` validated,
  ``BatchPrediction.model_construct`` with one dict per row) and serialising it to JSON
  as FastAPI does (pydantic-core, ``dump_json``). "Without" is the answer as it was
  before the issue (the same models minus the range fields).

Each pair is timed in alternation. The extra is ``bounds`` (what ``predict_interval``
adds to ``predict``, timed alone) plus the median paired difference of the answers;
the ratio is that extra over ``--guarded-us``, per request for one row and per row of
the batch, and, for the batch, over ``--guarded-batch-us`` (a guarded 1000-row batch's
server CPU, 5,408 µs in docs/benchmarks.md's profile).
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
from pydantic import BaseModel, Field, TypeAdapter

from app.schemas import BatchPrediction, Prediction
from bench.predict_path import per_call_us
from ml.artifacts import LoadedModel, load_all
from ml.dataset import load_dataset
from ml.training import train_all

BATCH = 1000
GUARDED_SINGLE_US = 900.0
GUARDED_BATCH_US = 5408.0
BUDGET = 0.05


class _PredictionBefore(BaseModel):
    """``Prediction`` as it was before the range (same fields, same order)."""

    predicted_price: float = Field(description="Predicted sale price, 1987 Canadian dollars.")
    model_version: str
    model_sha256: str


class _BatchBefore(BaseModel):
    predictions: list[float]
    model_version: str
    model_sha256: str


def _answers(model: LoadedModel) -> dict[str, Callable[[np.ndarray], bytes]]:
    """The endpoint's work after the model, before and after the issue, to JSON bytes."""
    single_new, single_old = TypeAdapter(Prediction), TypeAdapter(_PredictionBefore)
    batch_new, batch_old = TypeAdapter(BatchPrediction), TypeAdapter(_BatchBefore)
    version, sha = model.version, model.sha256
    level = model.interval.level

    def single_before(prices: np.ndarray) -> bytes:
        [price] = prices.tolist()
        answer = _PredictionBefore(predicted_price=price, model_version=version, model_sha256=sha)
        return single_old.dump_json(answer)

    def single_after(prices: np.ndarray) -> bytes:
        low, high = model.interval_bounds(prices)
        [price], [lo], [hi] = prices.tolist(), low.tolist(), high.tolist()
        answer = Prediction(
            predicted_price=price,
            interval={"low": lo, "high": hi, "level": level},
            model_version=version,
            model_sha256=sha,
        )
        return single_new.dump_json(answer)

    def batch_before(prices: np.ndarray) -> bytes:
        answer = _BatchBefore.model_construct(
            predictions=prices.tolist(), model_version=version, model_sha256=sha
        )
        return batch_old.dump_json(answer)

    def batch_after(prices: np.ndarray) -> bytes:
        low, high = model.interval_bounds(prices)
        answer = BatchPrediction.model_construct(
            predictions=prices.tolist(),
            intervals=[
                {"low": lo, "high": hi, "level": level}
                for lo, hi in zip(low.tolist(), high.tolist(), strict=True)
            ],
            model_version=version,
            model_sha256=sha,
        )
        return batch_new.dump_json(answer)

    return {
        "single_before": single_before,
        "single_after": single_after,
        "batch_before": batch_before,
        "batch_after": batch_after,
    }


def paired_us(
    before: Callable[[], object], after: Callable[[], object], repeats: int, budget_s: float = 0.1
) -> tuple[float, float, float]:
    """Median µs per call of ``before``, of ``after``, and of their difference, measured
    in alternation (before, after, before, ...) so that a busy machine slows both alike."""
    calls = max(3, min(20_000, int(budget_s / max(per_call_us(after, 1, 0.01) * 1e-6, 1e-7))))
    samples: list[tuple[float, float]] = []
    for _ in range(repeats):
        pair = []
        for action in (before, after):
            start = time.perf_counter()
            for _ in range(calls):
                action()
            pair.append((time.perf_counter() - start) / calls * 1e6)
        samples.append((pair[0], pair[1]))
    return (
        statistics.median(b for b, _ in samples),
        statistics.median(a for _, a in samples),
        statistics.median(a - b for b, a in samples),
    )


def measure(model: LoadedModel, X: np.ndarray, repeats: int) -> list[dict[str, Any]]:
    answers = _answers(model)
    out = []
    for rows, kind in ((1, "single"), (BATCH, "batch")):
        batch = np.ascontiguousarray(X[np.arange(rows) % len(X)])
        prices = model.predict(batch)
        before_json, after_json = answers[f"{kind}_before"], answers[f"{kind}_after"]
        assert b'"interval' in after_json(prices)
        assert b'"interval' not in before_json(prices)
        predict, predict_interval, _ = paired_us(
            partial(model.predict, batch), partial(model.predict_interval, batch), repeats
        )
        # predict_interval is predict plus interval_bounds: timed alone, the extra is not
        # lost in the model's own jitter (tens of µs on a busy machine).
        bounds = per_call_us(partial(model.interval_bounds, prices), repeats)
        before, after, answer_extra = paired_us(
            partial(before_json, prices), partial(after_json, prices), repeats
        )
        extra = bounds + answer_extra
        out.append(
            {
                "rows": rows,
                "predict_us": predict,
                "predict_interval_us": predict_interval,
                "bounds_alone_us": bounds,
                "answer_before_us": before,
                "answer_after_us": after,
                "extra_us": extra,
                "extra_per_row_us": extra / rows,
            }
        )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, help="trained models (default: train now)")
    parser.add_argument("--data", type=Path, default=Path("data/housing.csv"))
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--guarded-us", type=float, default=GUARDED_SINGLE_US)
    parser.add_argument("--guarded-batch-us", type=float, default=GUARDED_BATCH_US)
    args = parser.parse_args(argv)
    if args.repeats < 5:
        parser.error("--repeats must be at least 5")

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir
        if model_dir is None:
            model_dir = Path(tmp)
            train_all(args.data, model_dir)
        models = load_all(model_dir)

    budget = args.guarded_us * BUDGET
    print(
        f"median of {args.repeats} repeats; µs per call; batch = {BATCH} rows; budget "
        f"{BUDGET:.0%} of a {args.guarded_us:.0f} µs guarded single prediction = {budget:.0f} µs"
    )
    header = (
        f"{'model':<6} {'rows':>5} {'predict':>9} {'+range':>9} {'bounds':>7} {'answer':>9}"
        f" {'+range':>9} {'extra':>8} {'per row':>8} {'vs single':>10} {'vs batch':>9}"
    )
    print(header)
    for version, model in models.items():
        X = load_dataset(args.data, model.version).X
        for r in measure(model, X, args.repeats):
            print(
                f"{version:<6} {r['rows']:>5} {r['predict_us']:>9.1f} "
                f"{r['predict_interval_us']:>9.1f} {r['bounds_alone_us']:>7.1f} "
                f"{r['answer_before_us']:>9.1f} "
                f"{r['answer_after_us']:>9.1f} {r['extra_us']:>8.1f} "
                f"{r['extra_per_row_us']:>8.2f} {r['extra_per_row_us'] / args.guarded_us:>10.2%}"
                + (f" {r['extra_us'] / args.guarded_batch_us:>9.1%}" if r["rows"] > 1 else "")
            )


if __name__ == "__main__":
    main()
