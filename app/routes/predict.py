"""Prediction endpoints for v1 and v2, single and batch.

Who may call, and how much, was decided by the guard layer (``app.guard``) before
the body was read; these routes validate the body, predict, and (for a batch, whose
cost is known only once its rows are counted) charge the caller's budget.

The endpoints are ``async def`` and run on the event loop: a prediction is tens of
microseconds of NumPy (a 1000-row batch about a millisecond, less than parsing its
body). Measured side by side (``bench/``), handing each request to FastAPI's
threadpool instead cost 25-30 % of throughput: the hand-off itself, and the loop and
the worker thread taking turns at the GIL.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from operator import attrgetter
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError

from app.deps import PREDICTOR_SECURITY
from app.errors import TooManyRequests
from app.guard import rate_limited
from app.json_body import JsonRoute
from app.limits import cost_of_batch
from app.openapi import problems
from app.schemas import BatchPrediction, BatchV1, BatchV2, HouseV1, HouseV2, Prediction
from app.settings import Settings
from app.state import services
from ml.artifacts import LoadedModel
from monitoring.logs import request_id_var
from monitoring.predictionlog import (
    FEATURE_KINDS,
    PredictionBatch,
    matrix_columns,
    shadow_models,
)
from monitoring.tracing import traced


def _matrix(houses: Sequence[HouseV1], model: LoadedModel) -> np.ndarray:
    """Shape validated houses into the float64 matrix the model was trained on.

    ``attrgetter`` and ``fromiter`` run in C: twice as fast as a ``getattr`` and a
    ``float`` per value, which for 1000 rows of v2 was over a millisecond.
    """
    names = model.feature_names
    rows, width = len(houses), len(names)
    values: Iterable[Any]
    if width == 1:  # attrgetter of one name gives the value, not a 1-tuple
        values = map(attrgetter(names[0]), houses)
    else:
        values = chain.from_iterable(map(attrgetter(*names), houses))
    return np.fromiter(values, dtype=np.float64, count=rows * width).reshape(rows, width)


@dataclass(frozen=True, slots=True)
class _Answer:
    """A request's predictions: the matrix (the prediction log reuses it), the prices
    and their ranges as Python floats (``tolist`` converts in C), and the ranges as
    arrays, kept on ``request.state.price_intervals`` so a logger can record their
    width (``high - low``) without recomputing anything."""

    X: np.ndarray
    prices: list[float]
    lows: list[float]
    highs: list[float]
    low: np.ndarray
    high: np.ndarray


@traced("model")
def _predict(model: LoadedModel, houses: Sequence[HouseV1]) -> _Answer:
    """Prices and their conformal ranges for validated houses, in order."""
    X = _matrix(houses, model)
    prices, low, high = model.predict_interval(X)
    # float64 arrays: tolist makes Python floats, in C.
    return _Answer(X, prices.tolist(), low.tolist(), high.tolist(), low, high)


def _record(request: Request, model: LoadedModel, answer: _Answer) -> None:
    """Hand a request's predictions to the prediction log (no I/O; never raises on a
    full queue: those rows are dropped and counted).

    The answer's matrix (rows in request order, columns ``model.feature_names``) gives
    the logged inputs, and its ranges their widths: nothing is converted when the log
    is off. Shadow mode (SHADOW_MODE=true): every other model in service
    whose features the request carries scores the same inputs in the writer thread,
    off the answer's path, logged with ``shadow=true`` and the same request id.
    """
    built = services(request)
    writer = built.prediction_log
    if writer is None:
        return
    principal = getattr(request.state, "principal", None)
    shadows = shadow_models(built.models, model) if built.settings.shadow_mode else ()
    writer.submit(
        PredictionBatch(
            at=time.time(),
            request_id=request_id_var.get(),
            principal=principal.id if principal is not None else None,
            model=model,
            features=matrix_columns(answer.X, model.feature_names, FEATURE_KINDS),
            prices=answer.prices,
            shadows=shadows,
            widths=(answer.high - answer.low).tolist(),
        )
    )


def _note(request: Request, model: LoadedModel, answer: _Answer) -> None:
    """What the request log and the prediction metrics report."""
    request.state.model_version = model.version
    request.state.predicted_rows = len(answer.prices)
    request.state.price_intervals = (answer.low, answer.high)


def _single(request: Request, version: str, house: HouseV1) -> Prediction:
    model = services(request).models[version]
    answer = _predict(model, [house])
    _note(request, model, answer)
    [price], [low], [high] = answer.prices, answer.lows, answer.highs
    _record(request, model, answer)
    return Prediction(
        predicted_price=price,
        interval={"low": low, "high": high, "level": model.interval.level},
        model_version=model.version,
        model_sha256=model.sha256,
    )


def _batch(request: Request, version: str, houses: Sequence[HouseV1]) -> BatchPrediction:
    model = services(request).models[version]
    answer = _predict(model, houses)
    _note(request, model, answer)
    _record(request, model, answer)
    level = model.interval.level
    # Built, not validated: the prices and ranges are the float lists made above (1000
    # floats revalidated for nothing otherwise), each range a plain dict (Interval is a
    # TypedDict). FastAPI still serialises it as BatchPrediction.
    return BatchPrediction.model_construct(
        predictions=answer.prices,
        intervals=[
            {"low": low, "high": high, "level": level}
            for low, high in zip(answer.lows, answer.highs, strict=True)
        ],
        model_version=model.version,
        model_sha256=model.sha256,
    )


async def _charge_batch(request: Request, settings: Settings, size: int) -> None:
    """Refuse batches over MAX_BATCH_SIZE, then charge the batch's whole cost
    (``1 + n // 100``) to the caller's budget: the guard layer only made sure some was
    left, since the cost is known only now. Refused: 429, nothing spent."""
    if size > settings.max_batch_size:
        raise RequestValidationError(
            [
                {
                    "type": "too_long",
                    "loc": ("body", "instances"),
                    "msg": f"At most {settings.max_batch_size} instances per batch.",
                }
            ]
        )
    state = request.scope["state"]
    answer = await services(request).budget.charge(state["principal"], cost_of_batch(size))
    state["quota"] = answer  # the guard answers these RateLimit fields
    if not answer.allowed:
        raise TooManyRequests(rate_limited(answer), headers=answer.headers())


# The batch endpoints take their body through these dependencies, which count and charge
# it before the endpoint runs. The body is validated here only: FastAPI validates a body
# parameter at every level that declares one, so the dependency and the endpoint each
# taking ``batch: BatchV1`` validated every batch twice (and reported each invalid field
# twice). ``async``: no thread is worth taking for a comparison.


async def _v1_batch(request: Request, batch: BatchV1) -> BatchV1:
    await _charge_batch(request, services(request).settings, len(batch.instances))
    return batch


async def _v2_batch(request: Request, batch: BatchV2) -> BatchV2:
    await _charge_batch(request, services(request).settings, len(batch.instances))
    return batch


V1Batch = Annotated[BatchV1, Depends(_v1_batch)]
V2Batch = Annotated[BatchV2, Depends(_v2_batch)]


def build_router(settings: Settings) -> APIRouter:
    router = APIRouter(
        tags=["predict"],
        route_class=JsonRoute,  # UTF-8 JSON only, parsed by orjson
        # Who may call, the media type and the quota were decided by the guard layer,
        # before the body was read; the requirement is declared for the OpenAPI document
        # (``openapi_extra``), with no dependency to solve on every request.
        responses=problems(400, 401, 403, 408, 413, 415, 422, 429, 503),
    )
    guarded = PREDICTOR_SECURITY
    batch_note = f" At most {settings.max_batch_size} instances; costs 1 + n // 100 of the quota."

    @router.post(
        "/v1/predict", summary="Predict one price with the v1 model", openapi_extra=guarded
    )
    async def predict_v1(request: Request, house: HouseV1) -> Prediction:
        return _single(request, "v1", house)

    @router.post(
        "/v1/predict/batch",
        summary="Predict prices for many houses (v1)",
        description="Answers in request order, identical to single calls." + batch_note,
        openapi_extra=guarded,
    )
    async def predict_v1_batch(request: Request, batch: V1Batch) -> BatchPrediction:
        return _batch(request, "v1", batch.instances)

    @router.post(
        "/v2/predict", summary="Predict one price with the v2 model", openapi_extra=guarded
    )
    async def predict_v2(request: Request, house: HouseV2) -> Prediction:
        return _single(request, "v2", house)

    @router.post(
        "/v2/predict/batch",
        summary="Predict prices for many houses (v2)",
        description="Answers in request order, identical to single calls." + batch_note,
        openapi_extra=guarded,
    )
    async def predict_v2_batch(request: Request, batch: V2Batch) -> BatchPrediction:
        return _batch(request, "v2", batch.instances)

    return router
