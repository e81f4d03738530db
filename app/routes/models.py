"""Model metadata: what answers, trained on what, and how well it did."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from app.deps import ModelReader, ModelsDep
from app.limits import QuotaLimiter, caller_key, predict_limit
from app.openapi import problems
from app.schemas import FeatureInfo, IntervalInfo, ModelInfo
from app.settings import Settings
from ml.artifacts import LoadedModel


def _info(model: LoadedModel) -> ModelInfo:
    manifest: dict[str, Any] = model.manifest
    return ModelInfo(
        version=model.version,
        features=list(model.feature_names),
        feature_details=[FeatureInfo.model_validate(f) for f in manifest["features"]],
        estimator=str(manifest["estimator"]["name"]),
        metrics=manifest["metrics"],
        # Validated whole at load (ml.intervals.check_entry); extra keys are dropped.
        interval=IntervalInfo.model_validate(manifest["interval"]),
        sha256=model.sha256,
        trained_at=manifest["trained_at"],
        training_data_sha256=manifest["training_data"]["sha256"],
    )


def build_router(limiter: QuotaLimiter, settings: Settings) -> APIRouter:
    router = APIRouter(
        tags=["models"],
        responses=problems(401, 403, 429, 503),
    )
    quota = limiter.shared_limit(predict_limit(settings), scope="metadata", key_func=caller_key)

    @router.get("/v1/model", summary="Metadata of the v1 model")
    @quota
    def model_v1(
        request: Request, response: Response, _: ModelReader, models: ModelsDep
    ) -> ModelInfo:
        return _info(models["v1"])

    @router.get("/v2/model", summary="Metadata of the v2 model")
    @quota
    def model_v2(
        request: Request, response: Response, _: ModelReader, models: ModelsDep
    ) -> ModelInfo:
        return _info(models["v2"])

    return router
