"""What runs beside the requests, started and stopped by the app's lifespan.

* The prediction-log writer (``monitoring.predictionlog``). Shutdown order is the
  point: uvicorn (or a gunicorn worker) on SIGTERM stops accepting, lets in-flight
  requests finish, and only then runs the lifespan's shutdown, which closes the
  writer; ``close`` writes every queued row before it returns. So every answered
  prediction is in the database when the process exits cleanly.
* The drift refresher: ``feature_drift_psi`` recomputed every DRIFT_REFRESH_SECONDS.
* The store watcher: while the credential store is known down, one probe a second
  (bounded by the engine's timeouts, in a thread), so requests never wait on a trial;
  and the limiter's way back from its in-memory fallback, checked every second.
* SIGHUP: reload the models in place (``app.reload``), in this process.
  Under gunicorn each worker has the handler (the master keeps its own meaning of
  SIGHUP, a graceful replacement of the workers; see ``app.reload``).

Shadow mode (SHADOW_MODE=true, see ``app.routes.predict``): the route's model answers,
as the API promises; every other model in service whose features the request carries
scores the same inputs too, in the writer thread (off the answer's path, so it costs the
caller nothing and its failures cannot touch the answer), and its prediction is logged
with ``shadow=true`` and the same request id. With v1 and v2 that means v2 traffic is
also scored by v1; v1 requests cannot be scored by v2, which needs six inputs v1's
strict schema refuses."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from fastapi import FastAPI
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from app.limits import QuotaLimiter, limiter_shared_ok
from app.reload import ModelReloader, ReloadFailed, publish_model_info
from app.state import Services
from auth.store import CredentialStore
from auth.verifier import CredentialVerifier
from auth.wiring import open_store
from migrations import schema_preparer
from ml.artifacts import load_all
from ml.features import MODEL_VERSIONS
from monitoring.drift import refresh_gauges
from monitoring.logs import flush_logs
from monitoring.predictionlog import PredictionLogWriter, make_log_engine
from monitoring.runtime import REFRESH_SECONDS as RUNTIME_REFRESH_SECONDS

logger = logging.getLogger("app.lifespan")


async def _refresh_drift_forever(built: Services, engine: Engine) -> None:
    settings = built.settings
    window = timedelta(hours=settings.drift_window_hours)
    while True:
        await asyncio.sleep(settings.drift_refresh_seconds)
        try:
            await asyncio.to_thread(refresh_gauges, engine, built.models, built.metrics, window)
        except Exception:  # a failed refresh keeps the previous values; try again later
            logger.exception("drift gauges: refresh failed")


async def _refresh_runtime_metrics_forever(built: Services) -> None:
    while True:
        await asyncio.sleep(RUNTIME_REFRESH_SECONDS)
        built.metrics.refresh_runtime()


async def _watch_dependencies(store: CredentialStore, limiter: QuotaLimiter) -> None:
    """Every second: probe the store while it is known down (the probe's success marks
    it up again), and bring the limiter back from its fallback once Redis answers."""
    health = store.health
    health.watched = True  # requests no longer try the store while it is down
    try:
        while True:
            await asyncio.sleep(health.retry_seconds)
            try:
                if not health.up:
                    await asyncio.to_thread(store.ping)
                await asyncio.to_thread(limiter_shared_ok, limiter)
            except Exception:  # the watcher must outlive anything; try again next time
                logger.exception("dependency watcher: check failed")
    finally:
        health.watched = False


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
async def lifespan(built: Services, app: FastAPI) -> AsyncIterator[None]:
    """Models, identity and operations up before the first request; down in reverse."""
    settings, metrics = built.settings, built.metrics
    # Verified before use: a tampered artifact stops the start (ArtifactError).
    built.models = load_all(settings.model_dir)
    publish_model_info(metrics, {}, built.models)
    # An empty database gets its schema; an outdated one is refused in production.
    with open_store(settings, schema_preparer(settings.is_production)) as store:
        verifier = CredentialVerifier(
            store,
            built.signing_keys,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            outage_grace_seconds=settings.store_outage_grace_seconds,
        )
        built.start_identity(store, verifier)

        async def models_loaded() -> bool:
            return all(version in built.models for version in MODEL_VERSIONS)

        async def database() -> bool:
            if store.health.refusing():  # known down: the watcher probes, not /readyz
                return False
            return await run_in_threadpool(store.ping)

        async def limiter_storage() -> bool:
            shared = await built.budget.quota.check()  # the guarded routes' counters
            return shared and await run_in_threadpool(limiter_shared_ok, built.limiter)

        built.readiness_checks.update(
            models=models_loaded, database=database, limiter=limiter_storage
        )
        watcher = asyncio.create_task(_watch_dependencies(store, built.limiter))
        try:
            # Prediction log, drift gauges, SIGHUP reloads; on shutdown (after uvicorn
            # has finished the in-flight requests) the prediction log is written out.
            async with _running_operations(built):
                yield
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


@asynccontextmanager
async def _running_operations(built: Services) -> AsyncIterator[None]:
    """Start the prediction log, drift refresher and SIGHUP reloads; on exit stop them,
    the prediction log last, after its queue is written."""
    settings, metrics = built.settings, built.metrics
    reloader = ModelReloader(built, settings.model_dir, metrics)
    engine = make_log_engine(settings.database_url)  # its own pool: the writer holds one
    built.start_operations(reloader, engine)  # /v1/usage reads daily counts from the log
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
        built.prediction_log = writer
    tasks: list[asyncio.Task[None]] = []
    if settings.drift_refresh_seconds > 0:
        tasks.append(asyncio.create_task(_refresh_drift_forever(built, engine)))
    if metrics.gc_counters is not None:  # under gunicorn: this worker's GC statistics
        tasks.append(asyncio.create_task(_refresh_runtime_metrics_forever(built)))
    try:
        with _sighup_reloads(reloader):
            yield
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if writer is not None:
            await asyncio.to_thread(writer.close)
        engine.dispose()
        await built.budget.quota.close()
        flush_logs()  # the last requests' events are written before the process exits
