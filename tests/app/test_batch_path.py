"""The batch path's shortcuts keep the contract: the body is validated once, counts
are checked in pydantic-core with the same rules, orjson parses what ``json.loads``
would, and the prediction log's columns come from the model's matrix unchanged."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from pydantic import ValidationError

from app.main import create_app
from app.routes.predict import _matrix
from app.schemas import BatchV1, BatchV2, HouseV1, HouseV2
from ml.artifacts import load_verified
from ml.features import FEATURES
from monitoring.predictionlog import FEATURE_KINDS as _KINDS
from monitoring.predictionlog import feature_columns, matrix_columns
from tests.app.conftest import open_client
from tests.support.houses import HOUSES, V1_HOUSE, V2_HOUSE

pytestmark = pytest.mark.anyio

SCHEMAS: dict[str, type[HouseV1]] = {"v1": HouseV1, "v2": HouseV2}
COUNTS = [f.name for f in FEATURES["v1"] if f.kind == "int"]


def random_houses(version: str, n: int, seed: int = 3) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    houses = []
    for _ in range(n):
        house: dict[str, Any] = {}
        for feature in FEATURES[version]:  # type: ignore[index]
            if feature.kind == "bool":
                house[feature.name] = bool(rng.integers(0, 2))
            elif feature.kind == "int":
                house[feature.name] = int(rng.integers(feature.lower, feature.upper + 1))
            else:
                house[feature.name] = float(rng.uniform(feature.lower, feature.upper))
        houses.append(house)
    return houses


def batch_with(version: str, index: int, field: str, raw_value: str, rows: int = 12) -> bytes:
    """A batch whose row ``index`` has ``field`` written as ``raw_value`` (JSON text)."""
    houses = [dict(HOUSES[version]) for _ in range(rows)]
    houses[index][field] = "__VALUE__"
    return json.dumps({"instances": houses}).replace('"__VALUE__"', raw_value).encode()


def post_raw(client: httpx.AsyncClient, path: str, content: bytes) -> Any:
    return client.post(path, content=content, headers={"content-type": "application/json"})


# --- validated once -------------------------------------------------------------------


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_an_invalid_field_in_a_batch_is_reported_once(
    client: httpx.AsyncClient, version: str
) -> None:
    """The dependency and the endpoint used to validate the body each: every error
    was listed twice."""
    body = batch_with(version, 4, "bedrooms", "-3")
    answer = await post_raw(client, f"/{version}/predict/batch", body)
    assert answer.status_code == 422, answer.text
    errors = answer.json()["errors"]
    assert [e["field"] for e in errors] == ["body.instances.4.bedrooms"]
    assert errors[0]["type"] == "greater_than_equal"


@pytest.mark.parametrize(("version", "model"), [("v1", BatchV1), ("v2", BatchV2)])
async def test_the_batch_body_is_validated_once(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, version: str, model: type
) -> None:
    """Counted where FastAPI validates each body parameter of each dependency level."""
    from fastapi.dependencies import utils

    original = utils._validate_value_with_model_field
    validated: list[Any] = []

    def counting(*, field: Any, **kwargs: Any) -> Any:
        validated.append(field.field_info.annotation)
        return original(field=field, **kwargs)

    monkeypatch.setattr(utils, "_validate_value_with_model_field", counting)
    answer = await client.post(
        f"/{version}/predict/batch", json={"instances": [HOUSES[version]] * 3}
    )
    assert answer.status_code == 200, answer.text
    assert validated.count(model) == 1


async def test_oversized_batches_are_refused_before_the_rate_limiter_counts(
    make_settings: Callable[..., Any],
) -> None:
    settings = make_settings(max_batch_size=3, rate_limit_predict="1/minute")
    async for client in open_client(create_app(settings)):
        for _ in range(3):
            over = await client.post("/v1/predict/batch", json={"instances": [V1_HOUSE] * 4})
            assert over.status_code == 422, over.text
            assert [e["field"] for e in over.json()["errors"]] == ["body.instances"]
            assert over.json()["errors"][0]["type"] == "too_long"
        ok = await client.post("/v1/predict/batch", json={"instances": [V1_HOUSE] * 3})
        assert ok.status_code == 200, ok.text
        limited = await client.post("/v1/predict/batch", json={"instances": [V1_HOUSE]})
        assert limited.status_code == 429


async def test_the_openapi_request_bodies_are_the_batch_models(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    for version in ("V1", "V2"):
        body = schema["paths"][f"/{version.lower()}/predict/batch"]["post"]["requestBody"]
        assert body["required"] is True
        assert body["content"]["application/json"]["schema"] == {
            "$ref": f"#/components/schemas/Batch{version}"
        }
        house = schema["components"]["schemas"][f"House{version}"]
        for name in COUNTS:
            field = house["properties"][name]
            assert field["type"] == "integer"
            assert {"minimum", "maximum", "description", "examples"} <= field.keys()


# --- whole numbers, checked in pydantic-core ------------------------------------------


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("index", [0, 5, 11])
async def test_whole_number_floats_count_anywhere_in_a_batch(
    client: httpx.AsyncClient, version: str, index: int
) -> None:
    exact = await post_raw(
        client, f"/{version}/predict/batch", batch_with(version, 0, "lotsize", "5850")
    )
    assert exact.status_code == 200, exact.text
    for name in COUNTS:
        value = HOUSES[version][name]
        answer = await post_raw(
            client, f"/{version}/predict/batch", batch_with(version, index, name, f"{value}.0")
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == exact.json()["predictions"]


REFUSED = [
    ("fraction", "2.5", "int_from_float"),
    ("string", '"3"', "int_type"),
    ("true", "true", "int_type"),
    ("false", "false", "int_type"),
    ("null", "null", "int_type"),
    ("nan", "NaN", "int_type"),
    ("infinity", "Infinity", "int_type"),
    ("huge_float", "1e300", "int_type"),
    ("array", "[3]", "int_type"),
    ("too_large", "100", "less_than_equal"),
    ("too_large_float", "100.0", "less_than_equal"),
    ("negative", "-1", "greater_than_equal"),
]


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("index", [0, 7, 11])
@pytest.mark.parametrize(("label", "raw", "error"), REFUSED, ids=[r[0] for r in REFUSED])
async def test_counts_refuse_what_they_always_refused_at_any_row(
    client: httpx.AsyncClient, version: str, index: int, label: str, raw: str, error: str
) -> None:
    for name in COUNTS:
        answer = await post_raw(
            client, f"/{version}/predict/batch", batch_with(version, index, name, raw)
        )
        assert answer.status_code == 422, (label, answer.text)
        errors = answer.json()["errors"]
        assert [e["field"] for e in errors] == [f"body.instances.{index}.{name}"], label
        assert errors[0]["type"] == error, label


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_counts_match_the_python_whole_number_rule(version: str) -> None:
    """Direct: 3.0 is 3 (an int), everything ``whole_number`` let through to a strict
    int check and saw refused is still refused, whatever the input's Python type."""
    model = SCHEMAS[version]
    accepted: list[tuple[float, int]] = [(3, 3), (3.0, 3), (-0.0, 0), (0.0, 0), (9.0, 9)]
    for value, expected in accepted:
        house = model.model_validate(HOUSES[version] | {"bedrooms": value})
        assert house.bedrooms == expected
        assert type(house.bedrooms) is int
        from_json = model.model_validate_json(json.dumps(HOUSES[version] | {"bedrooms": value}))
        assert from_json.bedrooms == expected
        assert type(from_json.bedrooms) is int
    refused: list[object] = [2.5, 9.5, "3", b"3", True, False, None, math.nan, math.inf]
    refused += [-math.inf, [3], {}, 10**30, -(10**30), 1e30, 2.0**63]
    for bad in refused:
        with pytest.raises(ValidationError):
            model.model_validate(HOUSES[version] | {"bedrooms": bad})


def test_other_fields_are_as_strict_as_ever() -> None:
    for value in ["5850", True, None, math.nan]:
        with pytest.raises(ValidationError):
            HouseV2.model_validate(V2_HOUSE | {"lotsize": value})
    for value in [1, 0, 1.0, "true", None]:
        with pytest.raises(ValidationError):
            HouseV2.model_validate(V2_HOUSE | {"airco": value})
    with pytest.raises(ValidationError):
        BatchV2.model_validate({"instances": [V2_HOUSE | {"price": 1}]})


# --- the JSON parser ------------------------------------------------------------------


async def test_what_orjson_refuses_is_answered_as_before(client: httpx.AsyncClient) -> None:
    """NaN goes to ``json.loads``, and is then refused by the field; a byte-order mark
    (which ``json.loads`` read as it always had) is refused before parsing now: JSON
    bodies are UTF-8 without one (RFC 8259 §8.1)."""
    nan = await post_raw(client, "/v1/predict/batch", batch_with("v1", 2, "lotsize", "NaN"))
    assert nan.status_code == 422
    assert [e["field"] for e in nan.json()["errors"]] == ["body.instances.2.lotsize"]
    body = json.dumps({"instances": [V1_HOUSE]}).encode()
    with_bom = await post_raw(client, "/v1/predict/batch", b"\xef\xbb\xbf" + body)
    plain = await post_raw(client, "/v1/predict/batch", body)
    assert plain.status_code == 200
    assert with_bom.status_code == 400
    assert with_bom.headers["content-type"] == "application/problem+json"
    broken = await post_raw(client, "/v1/predict/batch", body[:-3])
    assert broken.status_code == 422
    assert broken.json()["errors"][0]["type"] == "json_invalid"


async def test_duplicate_keys_keep_the_last_as_json_loads_does(client: httpx.AsyncClient) -> None:
    row = json.dumps(V1_HOUSE)[:-1] + ', "bedrooms": 5}'
    answer = await post_raw(client, "/v1/predict/batch", f'{{"instances": [{row}]}}'.encode())
    expected = await client.post(
        "/v1/predict/batch", json={"instances": [V1_HOUSE | {"bedrooms": 5}]}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == expected.json()


# --- the matrix and the prediction log's columns --------------------------------------


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_matrix_and_log_columns_are_the_validated_values(
    trained_model_dir: Path, version: str
) -> None:
    model = load_verified(trained_model_dir, version)  # type: ignore[arg-type]
    batch: type[BatchV1 | BatchV2] = {"v1": BatchV1, "v2": BatchV2}[version]  # type: ignore[assignment]
    houses = batch.model_validate({"instances": random_houses(version, 257)}).instances
    X = _matrix(houses, model)
    expected = np.array(
        [[float(getattr(h, name)) for name in model.feature_names] for h in houses],
        dtype=np.float64,
    )
    assert X.dtype == np.float64
    assert X.shape == expected.shape
    assert np.array_equal(X, expected)
    columns = matrix_columns(X, model.feature_names, _KINDS)
    reference = feature_columns(houses, model.feature_names)
    assert columns == reference
    for name in model.feature_names:  # 3 stays 3, not 3.0; True stays True, not 1
        assert [type(v) for v in columns[name]] == [type(v) for v in reference[name]], name
