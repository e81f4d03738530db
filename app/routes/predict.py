"""Prediction endpoints for v1 and v2, single and batch.

Built per app by ``build_router(limiter, settings)`` because SlowAPI's limits
decorate the endpoints with that app's limiter. The endpoints are plain ``def``:
FastAPI runs them in its threadpool, so neither scikit-learn's CPU work nor the
limiter's Redis round trip blocks the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from fastapi import APIRouter, Depends, Request, Response, Security
from fastapi.exceptions import RequestValidationError

from app.deps import ModelsDep, SettingsDep, require_json
from app.limits import (
    PREDICT_SCOPE,
    QuotaLimiter,
    batch_cost,
    caller_key,
    cost_of_batch,
    predict_limit,
)
from app.openapi import problems
from app.operations.runtime import record_predictions
from app.schemas import BatchPrediction, BatchV1, BatchV2, HouseV1, HouseV2, Prediction
from app.security import authenticate
from app.settings import Settings
from auth.scopes import PREDICT
from ml.artifacts import LoadedModel


def _matrix(houses: Sequence[HouseV1], model: LoadedModel) -> np.ndarray:
    """Shape validated houses into the float64 matrix the model was trained on."""
    names = model.feature_names
    return np.array(
        [[float(getattr(house, name)) for name in names] for house in houses], dtype=np.float64
    )


def _predict(model: LoadedModel, houses: Sequence[HouseV1]) -> list[float]:
    return [float(price) for price in model.predict(_matrix(houses, model))]


def _note(request: Request, model: LoadedModel, rows: int) -> None:
    """What the request log and the prediction metrics report."""
    request.state.model_version = model.version
    request.state.predicted_rows = rows


def _single(request: Request, model: LoadedModel, house: HouseV1) -> Prediction:
    [price] = _predict(model, [house])
    _note(request, model, 1)
    record_predictions(request, model, [house], [price])
    return Prediction(predicted_price=price, model_version=model.version, model_sha256=model.sha256)


def _batch(request: Request, model: LoadedModel, houses: Sequence[HouseV1]) -> BatchPrediction:
    prices = _predict(model, houses)
    _note(request, model, len(prices))
    record_predictions(request, model, houses, prices)
    return BatchPrediction(
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


# Dependencies run before SlowAPI's check, so the batch's cost is known in time.
# (FastAPI parses the body once: the same-named, same-typed ``batch`` is shared.)
def _v1_batch(request: Request, settings: SettingsDep, batch: BatchV1) -> None:
    _check_batch(request, settings, len(batch.instances))


def _v2_batch(request: Request, settings: SettingsDep, batch: BatchV2) -> None:
    _check_batch(request, settings, len(batch.instances))


def build_router(limiter: QuotaLimiter, settings: Settings) -> APIRouter:
    router = APIRouter(
        tags=["predict"],
        # Who is calling comes first: an anonymous caller learns nothing about the body.
        dependencies=[Security(authenticate, scopes=[PREDICT]), Depends(require_json)],
        responses=problems(401, 403, 408, 413, 415, 422, 429, 503),
    )
    # One budget per caller across every prediction route, v1 and v2 alike.
    quota = limiter.shared_limit(
        predict_limit(settings), scope=PREDICT_SCOPE, key_func=caller_key, cost=batch_cost
    )
    batch_note = f" At most {settings.max_batch_size} instances; costs 1 + n // 100 of the quota."

    @router.post("/v1/predict", summary="Predict one price with the v1 model")
    @quota
    def predict_v1(
        request: Request, response: Response, house: HouseV1, models: ModelsDep
    ) -> Prediction:
        return _single(request, models["v1"], house)

    @router.post(
        "/v1/predict/batch",
        summary="Predict prices for many houses (v1)",
        description="Answers in request order, identical to single calls." + batch_note,
        dependencies=[Depends(_v1_batch)],
    )
    @quota
    def predict_v1_batch(
        request: Request, response: Response, batch: BatchV1, models: ModelsDep
    ) -> BatchPrediction:
        return _batch(request, models["v1"], batch.instances)

    @router.post("/v2/predict", summary="Predict one price with the v2 model")
    @quota
    def predict_v2(
        request: Request, response: Response, house: HouseV2, models: ModelsDep
    ) -> Prediction:
        return _single(request, models["v2"], house)

    @router.post(
        "/v2/predict/batch",
        summary="Predict prices for many houses (v2)",
        description="Answers in request order, identical to single calls." + batch_note,
        dependencies=[Depends(_v2_batch)],
    )
    @quota
    def predict_v2_batch(
        request: Request, response: Response, batch: BatchV2, models: ModelsDep
    ) -> BatchPrediction:
        return _batch(request, models["v2"], batch.instances)

    return router
