"""(b) The tutorial implementation: ``async def`` calling ``model.predict`` on a list.

No authentication, no limits, no guards: the scikit-learn estimator is called as
the FastAPI and scikit-learn tutorials do, with a Python list, on the event loop.
The estimator is our own v1 artifact, loaded after its hash check.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from app.schemas import HouseV1
from app.settings import Settings
from ml.artifacts import load_verified
from ml.features import feature_names


def build() -> FastAPI:
    model = load_verified(Settings().model_dir, "v1").estimator
    names = feature_names("v1")
    app = FastAPI(title="tutorial")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/predict")
    async def predict(house: HouseV1) -> Any:
        price = model.predict([[getattr(house, name) for name in names]])[0]
        return {"predicted_price": float(price), "model_version": "v1"}

    return app
