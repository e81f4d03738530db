"""Every answer carries its 90% range: single and batch alike, documented in OpenAPI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from ml.artifacts import load_verified
from tests.app.test_batch_path import random_houses
from tests.support.houses import HOUSES

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_a_single_answer_carries_its_range(
    client: httpx.AsyncClient, trained_model_dir: Path, version: str
) -> None:
    answer = await client.post(f"/{version}/predict", json=HOUSES[version])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert list(body) == ["predicted_price", "interval", "model_version", "model_sha256"]
    price, interval = body["predicted_price"], body["interval"]
    assert interval == {"low": interval["low"], "high": interval["high"], "level": 0.9}
    assert interval["low"] < price < interval["high"]
    model = load_verified(trained_model_dir, version)  # type: ignore[arg-type]
    low, high = model.interval_bounds(np.array([price]))
    assert (interval["low"], interval["high"]) == (low[0], high[0])


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_a_batch_rows_range_equals_the_single_calls(
    client: httpx.AsyncClient, version: str
) -> None:
    houses = random_houses(version, 30, seed=17)
    batch = await client.post(f"/{version}/predict/batch", json={"instances": houses})
    assert batch.status_code == 200, batch.text
    body = batch.json()
    assert list(body) == ["predictions", "intervals", "model_version", "model_sha256"]
    assert len(body["intervals"]) == len(body["predictions"]) == len(houses)
    assert all(isinstance(p, float) for p in body["predictions"])  # still a list of floats
    singles = [(await client.post(f"/{version}/predict", json=h)).json() for h in houses]
    assert body["predictions"] == [s["predicted_price"] for s in singles]
    assert body["intervals"] == [s["interval"] for s in singles]
    for price, interval in zip(body["predictions"], body["intervals"], strict=True):
        assert interval["low"] < price < interval["high"]


async def test_dearer_houses_get_wider_ranges(client: httpx.AsyncClient) -> None:
    houses = random_houses("v2", 200, seed=4)
    body = (await client.post("/v2/predict/batch", json={"instances": houses})).json()
    order = np.argsort(body["predictions"])
    for end in ("low", "high"):
        values = np.array([body["intervals"][i][end] for i in order])
        assert np.all(np.diff(values) >= 0), end


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_model_metadata_reports_the_intervals_coverage(
    client: httpx.AsyncClient, trained_model_dir: Path, version: str
) -> None:
    info = (await client.get(f"/{version}/model")).json()
    interval = info["interval"]
    model = load_verified(trained_model_dir, version)  # type: ignore[arg-type]
    assert interval["level"] == 0.9
    assert (interval["low_factor"], interval["high_factor"]) == (
        model.interval.low_factor,
        model.interval.high_factor,
    )
    assert 0.87 <= interval["coverage"] <= 0.93
    assert set(interval["coverage_by_tercile"]) == {"low", "middle", "high"}
    assert set(interval["coverage_by_sale_price_tercile"]) == {"low", "middle", "high"}
    assert interval["mean_width"] > 0
    assert "nested" in interval["protocol"]
    # The existing fields are unchanged.
    assert {"mae", "rmse", "r2"} <= info["metrics"]["chosen"].keys()


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


async def test_openapi_documents_the_ranges(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    components = schema["components"]["schemas"]
    interval = components["Interval"]
    assert interval["type"] == "object"
    assert set(interval["required"]) == {"low", "high", "level"}
    assert {p["type"] for p in interval["properties"].values()} == {"number"}
    ref = {"$ref": "#/components/schemas/Interval"}
    prediction = components["Prediction"]
    assert prediction["properties"]["interval"]["$ref"] == ref["$ref"]
    assert {"predicted_price", "interval", "model_version", "model_sha256"} <= set(
        prediction["required"]
    )
    batch = components["BatchPrediction"]
    assert batch["properties"]["predictions"]["items"] == {"type": "number"}
    assert batch["properties"]["intervals"]["items"] == ref
    assert {"predictions", "intervals"} <= set(batch["required"])
    for version in ("v1", "v2"):
        for path, name in (
            (f"/{version}/predict", "Prediction"),
            (f"/{version}/predict/batch", "BatchPrediction"),
        ):
            ok = schema["paths"][path]["post"]["responses"]["200"]["content"]
            assert _resolve(schema, ok["application/json"]["schema"]) == components[name]
    info = components["ModelInfo"]
    assert info["properties"]["interval"]["$ref"] == "#/components/schemas/IntervalInfo"
    assert {"level", "coverage", "coverage_by_tercile", "mean_width"} <= set(
        components["IntervalInfo"]["required"]
    )


def test_the_ranges_are_kept_for_a_logger(trained_model_dir: Path) -> None:
    """The endpoint keeps each row's range as arrays beside the matrix: a prediction log
    can record ``high - low`` without computing anything again."""
    from app.routes.predict import _predict
    from app.schemas import BatchV1

    model = load_verified(trained_model_dir, "v1")
    houses = BatchV1.model_validate({"instances": random_houses("v1", 40)}).instances
    answer = _predict(model, houses)
    prices = np.array(answer.prices)
    np.testing.assert_array_equal(answer.low, answer.lows)
    np.testing.assert_array_equal(answer.high, answer.highs)
    np.testing.assert_array_equal(answer.high - answer.low, model.interval.width(prices))
