"""What runs beside the requests, started and stopped by the app's lifespan.

* The prediction-log writer (``app.operations.predictionlog``). Shutdown order is the
  point: uvicorn (or a gunicorn worker) on SIGTERM stops accepting, lets in-flight
  requests finish, and only then runs the lifespan's shutdown, which closes the
  writer; ``close`` writes every queued row before it returns. So every answered
  prediction is in the database when the process exits cleanly.
* The drift refresher: ``feature_drift_psi`` recomputed every DRIFT_REFRESH_SECONDS.
* SIGHUP: reload the models in place (``app.operations.reload``), in this process.
  Under gunicorn each worker has the handler (the master keeps its own meaning of
  SIGHUP, a graceful replacement of the workers; see ``app.operations.reload``).

Shadow mode (SHADOW_MODE=true): the route's model answers, as the API promises; every
other model in service whose features the request carries scores the same inputs too,
in the writer thread (off the answer's path, so it costs the caller nothing and its
failures cannot touch the answer), and its prediction is logged with ``shadow=true``
and the same request id. With v1 and v2 that means v2 traffic is also scored by v1;
v1 requests cannot be scored by v2, which needs six inputs v1's strict schema refuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from sqlalchemy import Engine

from app.observability.logs import request_id_var
from app.observability.metrics import Metrics
from app.operations.drift import refresh_gauges
from app.operations.predictionlog import (
    PredictionBatch,
    PredictionLogWriter,
    make_log_engine,
    matrix_columns,
)
from app.operations.reload import ModelReloader, ReloadFailed
from app.settings import Settings
from ml.artifacts import LoadedModel
from ml.features import FEATURES

logger = logging.getLogger("app.operations")

# int, float or bool: how the prediction log writes each feature's values.
_KINDS: dict[str, str] = {f.name: f.kind for features in FEATURES.values() for f in features}


def shadow_models(models: Mapping[str, LoadedModel], model: LoadedModel) -> tuple[LoadedModel, ...]:
    """The other models in service that can score what ``model`` was given."""
    given = set(model.feature_names)
    return tuple(
        other
        for version, other in models.items()
        if version != model.version and set(other.feature_names) <= given
    )


def record_predictions(
    request: Request, model: LoadedModel, X: np.ndarray, prices: Sequence[float]
) -> None:
    """Hand a request's predictions to the prediction log (no I/O; never raises on a
    full queue: those rows are dropped and counted).

    ``X`` is the matrix ``model`` was given (rows in request order, columns
    ``model.feature_names``): its columns are what is logged, with nothing converted
    when the log is off.
    """
    state = request.app.state
    writer: PredictionLogWriter | None = getattr(state, "prediction_log", None)
    if writer is None:
        return
    principal = getattr(request.state, "principal", None)
    shadows = shadow_models(state.models, model) if state.settings.shadow_mode else ()
    writer.submit(
        PredictionBatch(
            at=time.time(),
            request_id=request_id_var.get(),
            principal=principal.id if principal is not None else None,
            model=model,
            features=matrix_columns(X, model.feature_names, _KINDS),
            prices=list(prices),
            shadows=shadows,
        )
    )


async def _refresh_drift_forever(
    app: FastAPI, engine: Engine, metrics: Metrics, settings: Settings
) -> None:
    window = timedelta(hours=settings.drift_window_hours)
    while True:
        await asyncio.sleep(settings.drift_refresh_seconds)
        try:
            await asyncio.to_thread(refresh_gauges, engine, app.state.models, metrics, window)
        except Exception:  # a failed refresh keeps the previous values; try again later
            logger.exception("drift gauges: refresh failed")


@contextlib.contextmanager
def _sighup_reloads(reloader: ModelReloader) -> Iterator[None]:
    """SIGHUP reloads the models, for as long as the app runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[Any]] = set()

    def on_sighup() -> None:
        task = loop.create_task(reloader.reload(source="SIGHUP"))
        tasks.add(task)
        task.add_done_callback(_finished)

    def _finished(task: asyncio.Task[Any]) -> None:
        tasks.discard(task)
        if not task.cancelled() and not isinstance(task.exception(), ReloadFailed | None):
            logger.error("model reload on SIGHUP failed", exc_info=task.exception())

    previous = signal.getsignal(signal.SIGHUP)
    try:
        loop.add_signal_handler(signal.SIGHUP, on_sighup)
    except (NotImplementedError, RuntimeError):  # no signals here (another loop, Windows)
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        if previous is not None:  # None: set outside Python, cannot be restored
            signal.signal(signal.SIGHUP, previous)


@asynccontextmanager
async def running_operations(
    app: FastAPI, settings: Settings, metrics: Metrics
) -> AsyncIterator[None]:
    """Start the prediction log, drift refresher and SIGHUP reloads; on exit stop them,
    the prediction log last, after its queue is written."""
    reloader = ModelReloader(app, settings.model_dir, metrics)
    app.state.model_reloader = reloader
    app.state.prediction_log = None
    engine = make_log_engine(settings.database_url)  # its own pool: the writer holds one
    app.state.prediction_log_engine = engine  # /v1/usage reads daily counts from the log
    writer: PredictionLogWriter | None = None
    if settings.prediction_log_enabled:
        writer = PredictionLogWriter(
            engine,
            metrics,
            capacity=settings.prediction_log_queue_rows,
            flush_rows=settings.prediction_log_flush_rows,
            flush_interval=settings.prediction_log_flush_ms / 1000,
            retention=timedelta(days=settings.prediction_log_retention_days),
        )
        writer.start()
        app.state.prediction_log = writer
    drift: asyncio.Task[None] | None = None
    if settings.drift_refresh_seconds > 0:
        drift = asyncio.create_task(_refresh_drift_forever(app, engine, metrics, settings))
    try:
        with _sighup_reloads(reloader):
            yield
    finally:
        if drift is not None:
            drift.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drift
        if writer is not None:
            await asyncio.to_thread(writer.close)
        engine.dispose()
