"""Health, readiness, metadata, OpenAPI, and refusing to start on a bad artifact."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.main import create_app
from ml.artifacts import ArtifactError
from tests.app.conftest import open_client
from tests.support.openapi import response

pytestmark = pytest.mark.anyio


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_when_models_are_loaded(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["checks"]["models"] == "ok"


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_model_metadata(
    client: httpx.AsyncClient, trained_model_dir: Path, version: str
) -> None:
    import hashlib

    response = await client.get(f"/{version}/model")
    assert response.status_code == 200, response.text
    info = response.json()
    artifact = (trained_model_dir / version / "model.joblib").read_bytes()
    assert info["sha256"] == hashlib.sha256(artifact).hexdigest()
    assert info["version"] == version
    assert len(info["features"]) == (5 if version == "v1" else 11)
    assert {"mae", "rmse", "r2"} <= info["metrics"]["chosen"].keys()
    assert info["trained_at"]


async def test_unknown_route_is_a_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/v3/predict")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_wrong_method_is_a_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/predict")
    assert response.status_code == 405
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_openapi_declares_problem_answers(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    for status in ("401", "403", "413", "415", "422", "429", "503"):
        declared = response(spec, "/v1/predict", "post", status)
        assert "application/problem+json" in declared["content"], status
    schema = spec["components"]["schemas"]["HouseV1"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["lotsize"]["minimum"] >= 0
    assert (await client.get("/docs")).status_code == 200


async def test_tampered_artifact_stops_the_start(make_settings: Any, tmp_path: Path) -> None:
    source = make_settings().model_dir
    model_dir = tmp_path / "models"
    shutil.copytree(source, model_dir)
    artifact = model_dir / "v2" / "model.joblib"
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0x01
    artifact.write_bytes(bytes(data))

    app = create_app(make_settings(model_dir=model_dir))
    with pytest.raises(ArtifactError, match=r"v2/model\.joblib"):
        async for _ in open_client(app):
            pass
