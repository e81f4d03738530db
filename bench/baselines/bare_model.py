"""(m) The bare endpoint (a) plus the model we serve: what the guards are measured against.

The same FastAPI, the same strict body (``HouseV1``) and the same response model
(``Prediction``) as /v1/predict; the price comes from the same served model
(``ml.artifacts.load_verified(MODEL_DIR, "v1").predict``) on the same float64 matrix,
built by the route's own helper (``app.routes.predict._predict``). No authentication,
quota, admission, request id, metrics or log: (c)/(m) is what the guards cost.

It replaces the "unauthenticated twin", which overrode our app's security dependency
with ``app.dependency_overrides``: FastAPI rebuilds the dependency tree of an overridden
dependency on every request, so the twin was slower than the app it stood for.
"""

from __future__ import annotations

from fastapi import FastAPI

from app.routes.predict import _predict
from app.schemas import HouseV1, Prediction
from app.settings import Settings
from ml.artifacts import load_verified


def build() -> FastAPI:
    model = load_verified(Settings().model_dir, "v1")
    app = FastAPI(title="bare + the same model")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/predict")
    async def predict(house: HouseV1) -> Prediction:
        answer = _predict(model, [house])
        [price], [low], [high] = answer.prices, answer.lows, answer.highs
        return Prediction(
            predicted_price=price,
            interval={"low": low, "high": high, "level": model.interval.level},
            model_version=model.version,
            model_sha256=model.sha256,
        )

    return app
