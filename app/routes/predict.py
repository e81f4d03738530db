"""Prediction endpoints for v1 and v2, single and batch.

Built per app by ``build_router(limiter, settings)`` because SlowAPI's limits
decorate the endpoints with that app's limiter.

The endpoints are ``async def`` and run on the event loop, though they never await:
a prediction is tens of microseconds of NumPy (a 1000-row batch about a millisecond,
less than parsing its body), and the limiter's check is a dictionary update, or one
pipelined Redis round trip bounded by a 0.25 s socket timeout, after which SlowAPI
falls back to in-memory limits. Measured side by side (``bench/``), handing each
request to FastAPI's threadpool instead cost 25-30 % of throughput, with or without
Redis: the hand-off itself, and the loop and the worker thread taking turns at the GIL.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from itertools import chain
from operator import attrgetter
from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from app.deps import PREDICTOR_FIRST, ModelsDep, SettingsDep, require_json
from app.limits import (
    PREDICT_SCOPE,
    QuotaLimiter,
    batch_cost,
    caller_key,
    cost_of_batch,
    predict_limit,
)
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


class _OrjsonRequest(Request):
    """A request whose JSON body is parsed by orjson: a third of ``json.loads``' time,
    over a millisecond for a 1000-row v2 batch.

    Only the parser changes: FastAPI still validates the result where it always did,
    after authentication. For every document orjson accepts it gives what
    ``json.loads`` gives (the same floats, the last of duplicate keys), except that an
    integer beyond 64 bits becomes a float, which no field admits either. Whatever
    orjson refuses (NaN, a byte-order mark, lone surrogates...) is parsed again by
    ``json.loads``, so the answer is what it always was.
    """

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            with contextlib.suppress(orjson.JSONDecodeError):
                self._json = orjson.loads(await self.body())
        return await super().json()


class _OrjsonRoute(APIRoute):
    """FastAPI's documented hook for a custom ``Request`` class: see _OrjsonRequest."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def orjson_handler(request: Request) -> Response:
            return await handler(_OrjsonRequest(request.scope, request.receive))

        return orjson_handler


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


@traced("model")
def _predict(model: LoadedModel, houses: Sequence[HouseV1]) -> tuple[np.ndarray, list[float]]:
    """The model's input matrix (the prediction log reuses it) and its prices."""
    X = _matrix(houses, model)
    prices: list[float] = model.predict(X).tolist()  # float64: Python floats, in C
    return X, prices


def _record(request: Request, model: LoadedModel, X: np.ndarray, prices: list[float]) -> None:
    """Hand a request's predictions to the prediction log (no I/O; never raises on a
    full queue: those rows are dropped and counted).

    ``X`` is the matrix ``model`` was given (rows in request order, columns
    ``model.feature_names``): its columns are what is logged, with nothing converted
    when the log is off. Shadow mode (SHADOW_MODE=true): every other model in service
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
            features=matrix_columns(X, model.feature_names, FEATURE_KINDS),
            prices=prices,
            shadows=shadows,
        )
    )


def _note(request: Request, model: LoadedModel, rows: int) -> None:
    """What the request log and the prediction metrics report."""
    request.state.model_version = model.version
    request.state.predicted_rows = rows


def _single(request: Request, model: LoadedModel, house: HouseV1) -> Prediction:
    X, [price] = _predict(model, [house])
    _note(request, model, 1)
    _record(request, model, X, [price])
    return Prediction(predicted_price=price, model_version=model.version, model_sha256=model.sha256)


def _batch(request: Request, model: LoadedModel, houses: Sequence[HouseV1]) -> BatchPrediction:
    X, prices = _predict(model, houses)
    _note(request, model, len(prices))
    _record(request, model, X, prices)
    # Built, not validated: the prices are the float list made above (1000 floats
    # revalidated for nothing otherwise). FastAPI still serialises it as BatchPrediction.
    return BatchPrediction.model_construct(
        predictions=prices, model_version=model.version, model_sha256=model.sha256
    )


def _check_batch(request: Request, settings: Settings, size: int) -> None:
    """Refuse batches over MAX_BATCH_SIZE and price the rest for the rate limiter."""
    if size > settings.max_batch_size:
        raise RequestValidationError(
            [
                {
                    "type": "too_long",
                    "loc": ("body", "instances"),
                    "msg": f"At most {settings.max_batch_size} instances per batch; got {size}.",
                }
            ]
        )
    request.state.rate_cost = cost_of_batch(size)


# The batch endpoints take their body through these dependencies: dependencies run
# before SlowAPI's check, so the batch's size is refused and its cost known in time.
# The body is validated here only: FastAPI validates a body parameter at every level
# that declares one, so the dependency and the endpoint each taking ``batch: BatchV1``
# validated every batch twice (and reported each invalid field twice). ``async``: no
# thread is worth taking for a comparison.
async def _v1_batch(request: Request, settings: SettingsDep, batch: BatchV1) -> BatchV1:
    _check_batch(request, settings, len(batch.instances))
    return batch


async def _v2_batch(request: Request, settings: SettingsDep, batch: BatchV2) -> BatchV2:
    _check_batch(request, settings, len(batch.instances))
    return batch


V1Batch = Annotated[BatchV1, Depends(_v1_batch)]
V2Batch = Annotated[BatchV2, Depends(_v2_batch)]


def build_router(limiter: QuotaLimiter, settings: Settings) -> APIRouter:
    router = APIRouter(
        tags=["predict"],
        route_class=_OrjsonRoute,
        # Who is calling comes first: an anonymous caller learns nothing about the body.
        dependencies=[PREDICTOR_FIRST, Depends(require_json)],
        responses=problems(401, 403, 408, 413, 415, 422, 429, 503),
    )
    # One budget per caller across every prediction route, v1 and v2 alike.
    quota = limiter.shared_limit(
        predict_limit(settings), scope=PREDICT_SCOPE, key_func=caller_key, cost=batch_cost
    )
    batch_note = f" At most {settings.max_batch_size} instances; costs 1 + n // 100 of the quota."

    @router.post("/v1/predict", summary="Predict one price with the v1 model")
    @quota
    async def predict_v1(
        request: Request, response: Response, house: HouseV1, models: ModelsDep
    ) -> Prediction:
        return _single(request, models["v1"], house)

    @router.post(
        "/v1/predict/batch",
        summary="Predict prices for many houses (v1)",
        description="Answers in request order, identical to single calls." + batch_note,
    )
    @quota
    async def predict_v1_batch(
        request: Request, response: Response, batch: V1Batch, models: ModelsDep
    ) -> BatchPrediction:
        return _batch(request, models["v1"], batch.instances)

    @router.post("/v2/predict", summary="Predict one price with the v2 model")
    @quota
    async def predict_v2(
        request: Request, response: Response, house: HouseV2, models: ModelsDep
    ) -> Prediction:
        return _single(request, models["v2"], house)

    @router.post(
        "/v2/predict/batch",
        summary="Predict prices for many houses (v2)",
        description="Answers in request order, identical to single calls." + batch_note,
    )
    @quota
    async def predict_v2_batch(
        request: Request, response: Response, batch: V2Batch, models: ModelsDep
    ) -> BatchPrediction:
        return _batch(request, models["v2"], batch.instances)

    return router
