"""The prediction log: what it records, when it writes, what it does when it cannot."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, insert, select

from app.main import create_app
from app.settings import Settings
from migrations import upgrade_schema
from ml.artifacts import LoadedModel, load_verified
from monitoring.metrics import Metrics
from monitoring.predictionlog import (
    TABLE,
    PredictionBatch,
    PredictionLogWriter,
    iter_predictions,
    make_log_engine,
    query,
    stream,
)
from tests.operations.conftest import flush, http, wait_until
from tests.support.houses import V1_HOUSE, V2_HOUSE

pytestmark = pytest.mark.anyio


def logged(engine: Engine, **filters: Any) -> list[dict[str, Any]]:
    """One record per logged prediction, in the order written."""
    return [p for row in stream(engine, query(**filters)) for p in iter_predictions(row)]


def metric(metrics: Metrics, name: str, **labels: str) -> float:
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


@pytest.fixture
def v1(model_dir: Path) -> LoadedModel:
    return load_verified(model_dir, "v1")


def batch(model: LoadedModel, rows: int, *, at: float | None = None) -> PredictionBatch:
    return PredictionBatch(
        at=time.time() if at is None else at,
        request_id="req-unit-test",
        principal="client:unit",
        model=model,
        features={name: [float(V1_HOUSE[name])] * rows for name in model.feature_names},
        prices=[100_000.0] * rows,
    )


# --- what is recorded ----------------------------------------------------------------


async def test_every_prediction_is_logged_with_its_inputs_answer_model_caller_and_request(
    running: FastAPI, log_engine: Engine
) -> None:
    key_id, key = running.state.services.store.api_keys.create("partner", "predict")
    started = datetime.now(UTC)
    async with http(running, **{"X-API-Key": key}) as client:
        single = await client.post(
            "/v1/predict", json=V1_HOUSE, headers={"X-Request-ID": "edge-single-0001"}
        )
        many = await client.post(
            "/v1/predict/batch", json={"instances": [V1_HOUSE, {**V1_HOUSE, "lotsize": 9000}]}
        )
        v2 = await client.post("/v2/predict", json=V2_HOUSE)
    assert {single.status_code, many.status_code, v2.status_code} == {200}
    flush(running)

    rows = logged(log_engine)
    assert [(r["model_version"], r["batch_index"]) for r in rows] == [
        ("v1", 0),
        ("v1", 0),
        ("v1", 1),
        ("v2", 0),
    ]
    first, second, third, fourth = rows
    assert first["features"] == V1_HOUSE
    assert first["prediction"] == single.json()["predicted_price"]
    assert first["request_id"] == "edge-single-0001" == single.headers["X-Request-ID"]
    assert [second["prediction"], third["prediction"]] == many.json()["predictions"]
    assert second["request_id"] == third["request_id"] == many.headers["X-Request-ID"]
    assert third["features"]["lotsize"] == 9000
    assert fourth["features"] == V2_HOUSE  # the amenities stay booleans
    assert fourth["model_sha256"] == v2.json()["model_sha256"]
    assert first["model_sha256"] == single.json()["model_sha256"]
    # The width of each answered range, as served.
    ranges = [single.json()["interval"], *many.json()["intervals"], v2.json()["interval"]]
    assert [r["interval_width"] for r in rows] == [i["high"] - i["low"] for i in ranges]
    for row in rows:
        assert row["principal"] == f"api_key:{key_id}"
        assert row["shadow"] is False
        assert started <= row["at"] <= datetime.now(UTC)
    assert metric(running.state.services.metrics, "prediction_log_written_total") == 4


async def test_refused_requests_are_not_logged(running: FastAPI, log_engine: Engine) -> None:
    async with http(
        running, **{"X-API-Key": running.state.services.store.api_keys.create("p", "predict")[1]}
    ) as client:
        assert (
            await client.post("/v1/predict", json={**V1_HOUSE, "lotsize": -1})
        ).status_code == 422
    async with http(running) as anonymous:
        assert (await anonymous.post("/v1/predict", json=V1_HOUSE)).status_code == 401
    flush(running)
    assert logged(log_engine) == []


async def test_the_log_can_be_turned_off(
    make_settings: Callable[..., Settings], log_engine: Engine
) -> None:
    app = create_app(make_settings(prediction_log_enabled=False))
    async with app.router.lifespan_context(app):
        assert app.state.services.prediction_log is None
        headers = {"X-API-Key": app.state.services.store.api_keys.create("p", "predict")[1]}
        async with http(app, **headers) as client:
            assert (await client.post("/v1/predict", json=V1_HOUSE)).status_code == 200
    assert logged(log_engine) == []


# --- shadow mode ---------------------------------------------------------------------


async def test_shadow_mode_scores_v2_requests_with_v1_too_and_marks_those_rows(
    make_settings: Callable[..., Settings], log_engine: Engine
) -> None:
    app = create_app(make_settings(shadow_mode=True))
    async with app.router.lifespan_context(app):
        headers = {"X-API-Key": app.state.services.store.api_keys.create("p", "predict")[1]}
        async with http(app, **headers) as client:
            houses = [V2_HOUSE, {**V2_HOUSE, "lotsize": 12000, "airco": True}]
            answer = await client.post("/v2/predict/batch", json={"instances": houses})
            v1_answers = [
                (await client.post("/v1/predict", json={k: h[k] for k in V1_HOUSE})).json()
                for h in houses
            ]
        flush(app)
    assert answer.json()["model_version"] == "v2"  # the route's model answers
    request_id = answer.headers["X-Request-ID"]
    answered = logged(log_engine, shadow=False)
    shadows = logged(log_engine, shadow=True)
    # Two answers from v2, plus one per /v1/predict call: no shadow for v1 traffic.
    assert [r["model_version"] for r in answered] == ["v2", "v2", "v1", "v1"]
    assert [r["prediction"] for r in answered[:2]] == answer.json()["predictions"]
    assert [(r["model_version"], r["request_id"], r["batch_index"]) for r in shadows] == [
        ("v1", request_id, 0),
        ("v1", request_id, 1),
    ]
    assert [r["prediction"] for r in shadows] == [a["predicted_price"] for a in v1_answers]
    # A shadow's range is the one v1 would have answered.
    assert [r["interval_width"] for r in shadows] == [
        a["interval"]["high"] - a["interval"]["low"] for a in v1_answers
    ]
    assert shadows[1]["features"] == {k: houses[1][k] for k in V1_HOUSE}


async def test_without_shadow_mode_nothing_is_shadowed(
    running: FastAPI, log_engine: Engine
) -> None:
    headers = {"X-API-Key": running.state.services.store.api_keys.create("p", "predict")[1]}
    async with http(running, **headers) as client:
        assert (await client.post("/v2/predict", json=V2_HOUSE)).status_code == 200
    flush(running)
    assert [r["model_version"] for r in logged(log_engine)] == ["v2"]


# --- the writer: flushing, overflow, failures, retention ------------------------------


def test_a_full_queue_drops_and_counts_rows_instead_of_blocking(
    log_engine: Engine, v1: LoadedModel, settings: Settings
) -> None:
    upgrade_schema(log_engine)
    metrics = Metrics()
    writer = PredictionLogWriter(
        log_engine, metrics, capacity=10, flush_rows=1000, flush_interval=60.0
    )
    # Not started yet: nothing drains the queue.
    began = time.perf_counter()
    accepted = [writer.submit(batch(v1, 4)) for _ in range(5)]
    assert time.perf_counter() - began < 0.5
    assert accepted == [True, True, False, False, False]
    assert metric(metrics, "prediction_log_dropped_total", reason="queue_full") == 12
    writer.start()
    writer.close()  # what was accepted is written
    assert len(logged(log_engine)) == 8
    assert not writer.submit(batch(v1, 1))  # after close: refused and counted
    assert metric(metrics, "prediction_log_dropped_total", reason="closed") == 1


def test_the_writer_flushes_every_interval_and_every_n_rows(
    log_engine: Engine, v1: LoadedModel
) -> None:
    upgrade_schema(log_engine)
    by_time = PredictionLogWriter(log_engine, Metrics(), flush_rows=10_000, flush_interval=0.05)
    by_time.start()
    try:
        by_time.submit(batch(v1, 1))
        wait_until(lambda: len(logged(log_engine)) == 1, timeout=5.0)
    finally:
        by_time.close()
    by_rows = PredictionLogWriter(log_engine, Metrics(), flush_rows=5, flush_interval=60.0)
    by_rows.start()
    try:
        by_rows.submit(batch(v1, 2))
        time.sleep(0.3)
        assert len(logged(log_engine)) == 1  # still the first writer's: 2 of 5 rows wait
        by_rows.submit(batch(v1, 3))
        wait_until(lambda: len(logged(log_engine)) == 6, timeout=5.0)  # long before 60 s
    finally:
        by_rows.close()


def test_write_failures_are_counted_and_the_writer_keeps_going(
    tmp_path: Path, v1: LoadedModel
) -> None:
    engine = make_log_engine(f"sqlite:///{tmp_path / 'no-schema-yet.db'}")
    metrics = Metrics()
    writer = PredictionLogWriter(engine, metrics, flush_rows=1, flush_interval=0.05)
    writer.start()
    try:
        writer.submit(batch(v1, 3))
        assert writer.flush(timeout=10.0)
        assert metric(metrics, "prediction_log_dropped_total", reason="write_error") == 3
        upgrade_schema(engine)  # the database is back
        writer.submit(batch(v1, 2))
        assert writer.flush(timeout=10.0)
        assert len(logged(engine)) == 2
        assert metric(metrics, "prediction_log_written_total") == 2
    finally:
        writer.close()
        engine.dispose()


async def test_rows_older_than_the_retention_are_purged(
    make_settings: Callable[..., Settings], log_engine: Engine
) -> None:
    upgrade_schema(log_engine)
    now = datetime.now(UTC)
    row = {
        "request_id": None,
        "principal": None,
        "model_version": "v1",
        "model_sha256": "0" * 64,
        "shadow": False,
        "batch_size": 1,
        "features": {"lotsize": [5850]},
        "predictions": [1.0],
    }
    with log_engine.begin() as connection:
        connection.execute(
            insert(TABLE),
            [
                {**row, "at": now - timedelta(days=8), "request_id": "old"},
                {**row, "at": now - timedelta(days=6), "request_id": "recent"},
            ],
        )
    app = create_app(make_settings(prediction_log_retention_days=7))
    async with app.router.lifespan_context(app):

        def kept() -> list[str]:
            with log_engine.connect() as connection:
                return list(connection.scalars(select(TABLE.c.request_id)))

        wait_until(lambda: kept() == ["recent"], timeout=10.0)


# --- PostgreSQL ----------------------------------------------------------------------


@pytest.mark.postgres
def test_the_log_round_trips_through_postgresql(postgres_url: str, v1: LoadedModel) -> None:
    engine = make_log_engine(postgres_url)
    try:
        upgrade_schema(engine)
        writer = PredictionLogWriter(engine, Metrics(), flush_interval=0.05)
        writer.start()
        writer.submit(batch(v1, 3))
        writer.close()
        rows = logged(engine, version="v1")
        assert [r["batch_index"] for r in rows] == [0, 1, 2]
        assert rows[0]["features"] == {name: float(V1_HOUSE[name]) for name in V1_HOUSE}
        assert rows[0]["at"].tzinfo is not None
    finally:
        engine.dispose()
