"""Prediction endpoints for v1 and v2, single and batch."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from fastapi import APIRouter, Depends, Security
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool

from app.deps import ModelsDep, SettingsDep, require_json
from app.openapi import problems
from app.schemas import BatchPrediction, BatchV1, BatchV2, HouseV1, HouseV2, Prediction
from app.security import authenticate
from auth.scopes import PREDICT
from ml.artifacts import LoadedModel

router = APIRouter(
    tags=["predict"],
    # Who is calling comes first: an anonymous caller learns nothing about the body.
    dependencies=[Security(authenticate, scopes=[PREDICT]), Depends(require_json)],
    responses=problems(401, 403, 413, 415, 422, 429, 503),
)


def _matrix(houses: Sequence[HouseV1], model: LoadedModel) -> np.ndarray:
    """Shape validated houses into the float64 matrix the model was trained on."""
    names = model.feature_names
    return np.array(
        [[float(getattr(house, name)) for name in names] for house in houses], dtype=np.float64
    )


async def _predict(model: LoadedModel, houses: Sequence[HouseV1]) -> list[float]:
    # scikit-learn is CPU-bound: run it off the event loop so one request
    # never blocks every other one.
    prices = await run_in_threadpool(model.predict, _matrix(houses, model))
    return [float(price) for price in prices]


def _check_batch_size(size: int, limit: int) -> None:
    if size > limit:
        raise RequestValidationError(
            [
                {
                    "type": "too_long",
                    "loc": ("body", "instances"),
                    "msg": f"A batch holds at most {limit} instances; got {size}.",
                }
            ]
        )


@router.post("/v1/predict", summary="Predict one price with the v1 model")
async def predict_v1(house: HouseV1, models: ModelsDep) -> Prediction:
    model = models["v1"]
    [price] = await _predict(model, [house])
    return Prediction(predicted_price=price, model_version="v1", model_sha256=model.sha256)


@router.post("/v1/predict/batch", summary="Predict prices for up to MAX_BATCH_SIZE houses (v1)")
async def predict_v1_batch(
    batch: BatchV1, models: ModelsDep, settings: SettingsDep
) -> BatchPrediction:
    _check_batch_size(len(batch.instances), settings.max_batch_size)
    model = models["v1"]
    prices = await _predict(model, batch.instances)
    return BatchPrediction(predictions=prices, model_version="v1", model_sha256=model.sha256)


@router.post("/v2/predict", summary="Predict one price with the v2 model")
async def predict_v2(house: HouseV2, models: ModelsDep) -> Prediction:
    model = models["v2"]
    [price] = await _predict(model, [house])
    return Prediction(predicted_price=price, model_version="v2", model_sha256=model.sha256)


@router.post("/v2/predict/batch", summary="Predict prices for up to MAX_BATCH_SIZE houses (v2)")
async def predict_v2_batch(
    batch: BatchV2, models: ModelsDep, settings: SettingsDep
) -> BatchPrediction:
    _check_batch_size(len(batch.instances), settings.max_batch_size)
    model = models["v2"]
    prices = await _predict(model, batch.instances)
    return BatchPrediction(predictions=prices, model_version="v2", model_sha256=model.sha256)
