"""``housing-api predictions export``: one line per prediction, CSV or Parquet, filtered."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fastapi import FastAPI
from typer.testing import CliRunner, Result

from app.settings import Settings
from cli.main import app as cli_app
from tests.operations.conftest import flush, http
from tests.support.houses import V1_HOUSE, V2_HOUSE

pytestmark = pytest.mark.anyio

Export = Callable[..., tuple[Result, Path]]
META = ["id", "at", "request_id", "batch_index", "principal", "model_version", "model_sha256"]


@pytest.fixture
async def logged(running: FastAPI) -> dict[str, str]:
    """Three v1 predictions (a single and a batch of two) and one v2; their request ids."""
    headers = {"X-API-Key": running.state.services.store.api_keys.create("p", "predict")[1]}
    async with http(running, **headers) as client:
        ids = {
            "single": (await client.post("/v1/predict", json=V1_HOUSE)).headers["X-Request-ID"],
            "batch": (
                await client.post(
                    "/v1/predict/batch", json={"instances": [V1_HOUSE, {**V1_HOUSE, "stories": 3}]}
                )
            ).headers["X-Request-ID"],
            "v2": (await client.post("/v2/predict", json=V2_HOUSE)).headers["X-Request-ID"],
        }
    flush(running)
    return ids


@pytest.fixture
def export(settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Export:
    """``housing-api predictions export -o FILE ARGS`` on the app's database."""
    for name, value in {
        "VAR_DIR": settings.var_dir,
        "DATABASE_URL": settings.database_url,
        "MODEL_DIR": settings.model_dir,
    }.items():
        monkeypatch.setenv(name, str(value))

    def run(*args: str) -> tuple[Result, Path]:
        output = tmp_path / "export.out"
        result = CliRunner().invoke(cli_app, ["predictions", "export", "-o", str(output), *args])
        return result, output

    return run


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


async def test_csv_has_one_line_per_prediction_with_every_feature_column(
    logged: dict[str, str], export: Export
) -> None:
    result, path = export("--format", "csv")
    assert result.exit_code == 0, result.output
    rows = read_csv(path)
    assert list(rows[0])[: len(META)] == META
    assert list(rows[0])[-6:] == ["driveway", "recroom", "fullbase", "gashw", "airco", "prefarea"]
    assert [(r["request_id"], r["batch_index"], r["model_version"]) for r in rows] == [
        (logged["single"], "0", "v1"),
        (logged["batch"], "0", "v1"),
        (logged["batch"], "1", "v1"),
        (logged["v2"], "0", "v2"),
    ]
    assert rows[2]["stories"] == "3"
    assert rows[0]["driveway"] == ""  # v1 takes no amenities
    assert rows[3]["driveway"] == "true"
    assert rows[3]["recroom"] == "false"
    assert all(r["shadow"] == "false" for r in rows)
    assert all(r["principal"].startswith("api_key:") for r in rows)
    assert rows[0]["at"].endswith("+00:00")


async def test_filters_by_version_and_time(logged: dict[str, str], export: Export) -> None:
    result, path = export("--version", "v2", "--since", "1h")
    assert result.exit_code == 0, result.output
    rows = read_csv(path)
    assert [r["request_id"] for r in rows] == [logged["v2"]]
    assert "driveway" in rows[0]

    result, path = export("--version", "v1")
    assert {r["model_version"] for r in read_csv(path)} == {"v1"}
    assert "driveway" not in read_csv(path)[0]  # only v1's features

    result, path = export("--since", "2999-01-01T00:00:00Z")
    assert result.exit_code == 0
    assert read_csv(path) == []

    for bad in (["--since", "yesterday"], ["--version", "v3"], ["--format", "xlsx"]):
        result, _ = export(*bad)
        assert result.exit_code != 0
        assert "Traceback" not in result.output


async def test_parquet_keeps_the_types(logged: dict[str, str], export: Export) -> None:
    result, path = export("--format", "parquet")
    assert result.exit_code == 0, result.output
    table = pq.read_table(path)
    types = {field.name: str(field.type) for field in table.schema}
    assert types["at"] == "timestamp[us, tz=UTC]"
    assert types["lotsize"] == "double"
    assert types["bedrooms"] == "int64"
    assert types["driveway"] == "bool"
    assert types["prediction"] == "double"
    rows = table.to_pylist()
    assert len(rows) == 4
    assert rows[3]["driveway"] is True
    assert rows[0]["driveway"] is None
    assert rows[1]["request_id"] == rows[2]["request_id"] == logged["batch"]
    assert isinstance(rows[0]["prediction"], float)
