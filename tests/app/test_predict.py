"""The prediction contract: strict inputs, identical batch and single answers, limits."""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
import numpy as np
import pytest

from ml.artifacts import load_verified
from ml.features import FEATURES
from tests.support.houses import HOUSES, V1_HOUSE, V2_HOUSE

pytestmark = pytest.mark.anyio


def raw_json(text: str) -> dict[str, Any]:
    return {"content": text.encode(), "headers": {"content-type": "application/json"}}


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert {"type", "title", "status", "detail"} <= body.keys()
    assert "Traceback" not in response.text
    return body


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_valid_house_gets_a_finite_price(client: httpx.AsyncClient, version: str) -> None:
    response = await client.post(f"/{version}/predict", json=HOUSES[version])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == version
    assert math.isfinite(body["predicted_price"])
    assert 10_000 < body["predicted_price"] < 500_000
    assert len(body["model_sha256"]) == 64


BAD_VALUES: list[tuple[str, Any]] = [
    ("string", '"3"'),
    ("boolean", "true"),
    ("null", "null"),
    ("nan", "NaN"),
    ("infinity", "Infinity"),
    ("minus_infinity", "-Infinity"),
    ("negative", "-1"),
    ("too_large", "1000000"),
    ("object", "{}"),
    ("array", "[3]"),
]


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize(("label", "value"), BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
async def test_every_numeric_field_refuses_bad_values(
    client: httpx.AsyncClient, version: str, label: str, value: str
) -> None:
    for feature in FEATURES[version]:
        if feature.kind == "bool":
            continue
        body = json.dumps(HOUSES[version]).replace(
            f'"{feature.name}": {json.dumps(HOUSES[version][feature.name])}',
            f'"{feature.name}": {value}',
        )
        assert value in body
        problem = assert_problem(await client.post(f"/{version}/predict", **raw_json(body)), 422)
        assert [e["field"] for e in problem["errors"]] == [f"body.{feature.name}"], label


@pytest.mark.parametrize("value", ['"yes"', "1", "0", "null", '"true"'])
async def test_amenities_accept_only_json_booleans(client: httpx.AsyncClient, value: str) -> None:
    for feature in FEATURES["v2"][5:]:
        body = json.dumps(V2_HOUSE).replace(
            f'"{feature.name}": {json.dumps(V2_HOUSE[feature.name])}', f'"{feature.name}": {value}'
        )
        problem = assert_problem(await client.post("/v2/predict", **raw_json(body)), 422)
        assert problem["errors"][0]["field"] == f"body.{feature.name}"


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_missing_field_is_named(client: httpx.AsyncClient, version: str) -> None:
    for name in HOUSES[version]:
        house = {k: v for k, v in HOUSES[version].items() if k != name}
        problem = assert_problem(await client.post(f"/{version}/predict", json=house), 422)
        assert [e["field"] for e in problem["errors"]] == [f"body.{name}"]
        assert problem["errors"][0]["type"] == "missing"


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_unknown_field_is_refused(client: httpx.AsyncClient, version: str) -> None:
    house = HOUSES[version] | {"price": 1}
    problem = assert_problem(await client.post(f"/{version}/predict", json=house), 422)
    assert problem["errors"][0]["field"] == "body.price"


async def test_fractional_count_is_refused(client: httpx.AsyncClient) -> None:
    assert_problem(await client.post("/v1/predict", json=V1_HOUSE | {"bedrooms": 2.5}), 422)


async def test_the_error_does_not_echo_the_input(client: httpx.AsyncClient) -> None:
    marker = "s3cr3t-looking-value"
    response = await client.post("/v1/predict", json=V1_HOUSE | {"lotsize": marker})
    assert_problem(response, 422)
    assert marker not in response.text


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_edge_values_are_accepted(client: httpx.AsyncClient, version: str) -> None:
    for pick in ("lower", "upper"):
        house = dict(HOUSES[version])
        for feature in FEATURES[version]:
            if feature.kind != "bool":
                house[feature.name] = getattr(feature, pick)
        response = await client.post(f"/{version}/predict", json=house)
        assert response.status_code == 200, (pick, response.text)
        assert math.isfinite(response.json()["predicted_price"])


@pytest.mark.parametrize(
    ("content_type", "status"),
    [("text/plain", 415), ("application/x-www-form-urlencoded", 415), (None, 415)],
)
async def test_body_must_be_json(
    client: httpx.AsyncClient, content_type: str | None, status: int
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = await client.post("/v1/predict", content=json.dumps(V1_HOUSE), headers=headers)
    assert_problem(response, status)


async def test_malformed_json_is_422(client: httpx.AsyncClient) -> None:
    assert_problem(await client.post("/v1/predict", **raw_json('{"lotsize": 5850,')), 422)


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_batch_equals_singles(client: httpx.AsyncClient, version: str) -> None:
    rng = np.random.default_rng(7)
    houses = []
    for _ in range(25):
        house: dict[str, Any] = {}
        for feature in FEATURES[version]:
            if feature.kind == "bool":
                house[feature.name] = bool(rng.integers(0, 2))
            elif feature.kind == "int":
                house[feature.name] = int(rng.integers(feature.lower, feature.upper + 1))
            else:
                house[feature.name] = float(rng.uniform(feature.lower, feature.upper))
        houses.append(house)
    batch = await client.post(f"/{version}/predict/batch", json={"instances": houses})
    assert batch.status_code == 200, batch.text
    singles = [
        (await client.post(f"/{version}/predict", json=h)).json()["predicted_price"] for h in houses
    ]
    assert batch.json()["predictions"] == singles
    assert batch.json()["model_version"] == version


async def test_empty_batch_is_422(client: httpx.AsyncClient) -> None:
    assert_problem(await client.post("/v1/predict/batch", json={"instances": []}), 422)


async def test_bad_row_in_batch_is_named(client: httpx.AsyncClient) -> None:
    rows = [V1_HOUSE, V1_HOUSE | {"bedrooms": -3}]
    problem = assert_problem(await client.post("/v1/predict/batch", json={"instances": rows}), 422)
    assert problem["errors"][0]["field"] == "body.instances.1.bedrooms"


async def test_batch_over_max_batch_size_is_refused(make_settings: Any) -> None:
    from app.main import create_app
    from tests.app.conftest import open_client

    async for client in open_client(create_app(make_settings(max_batch_size=3))):
        ok = await client.post("/v1/predict/batch", json={"instances": [V1_HOUSE] * 3})
        assert ok.status_code == 200
        over = await client.post("/v1/predict/batch", json={"instances": [V1_HOUSE] * 4})
        problem = assert_problem(over, 422)
        assert problem["errors"][0]["field"] == "body.instances"


async def test_body_over_limit_with_content_length_is_413(make_settings: Any) -> None:
    from app.main import create_app
    from tests.app.conftest import open_client

    async for client in open_client(create_app(make_settings(max_body_bytes=2048))):
        body = json.dumps({"instances": [V1_HOUSE] * 40})
        assert len(body) > 2048
        assert_problem(await client.post("/v1/predict/batch", **raw_json(body)), 413)


async def test_chunked_body_over_limit_is_413(make_settings: Any) -> None:
    from app.main import create_app
    from tests.app.conftest import open_client

    chunk = json.dumps(V1_HOUSE).encode() + b","

    async def stream() -> Any:
        yield b'{"instances": ['
        for _ in range(100):
            yield chunk
        yield json.dumps(V1_HOUSE).encode() + b"]}"

    async for client in open_client(create_app(make_settings(max_body_bytes=2048))):
        response = await client.post(
            "/v1/predict/batch", content=stream(), headers={"content-type": "application/json"}
        )
        assert "content-length" not in response.request.headers
        assert_problem(response, 413)


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_prediction_matches_the_model_loaded_directly(
    client: httpx.AsyncClient, trained_model_dir: Any, version: str
) -> None:
    import joblib

    estimator = joblib.load(trained_model_dir / version / "model.joblib")
    names = load_verified(trained_model_dir, version).feature_names
    response = await client.post(f"/{version}/predict", json=HOUSES[version])
    expected = estimator.predict(np.array([[float(HOUSES[version][n]) for n in names]]))
    assert response.json()["predicted_price"] == pytest.approx(float(expected[0]), rel=1e-12)
