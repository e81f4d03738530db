"""Prometheus metrics, correct under gunicorn with several workers.

Each app gets its own ``CollectorRegistry`` (tests build many apps). When
``PROMETHEUS_MULTIPROC_DIR`` is set (``housing-api serve --workers N`` sets it
before the workers start), prometheus-client keeps each worker's values in files
there and ``/metrics`` merges every worker's, so a scrape answered by any worker
tells the whole truth. ``process_*`` and ``python_*`` are in both modes
(``monitoring.runtime``: under gunicorn, per ``pid`` for the master and each worker).
"""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from monitoring.runtime import WorkerGcCounters, add_server_collectors, single_process_collectors

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.gc_counters: WorkerGcCounters | None = None
        if multiprocess_dir() is None:
            single_process_collectors(r)
        else:
            self.gc_counters = WorkerGcCounters(r)
        self.requests = Counter(
            "http_requests", "HTTP requests answered.", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Time to answer, by route.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            "predictions", "Rows predicted, by model version.", ["model_version"], registry=r
        )
        self.auth_failures = Counter(
            "auth_failures", "Refused credentials, by reason.", ["reason"], registry=r
        )
        self.rate_limited = Counter(
            "rate_limited", "Requests refused with 429, by route.", ["route"], registry=r
        )
        self.shed = Counter("load_shed", "Requests refused with 503 at capacity.", registry=r)
        # livemax, not max: a worker that exits (gunicorn's graceful reload on SIGHUP)
        # takes its models' series with it (app.gunicorn_conf.child_exit).
        self.model_info = Gauge(
            "model_info",
            "The model serving each version (value 1; 0 once replaced), with its artifact hash.",
            ["version", "sha256", "estimator"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.model_reloads = Counter(
            "model_reloads", "Model reloads, by outcome (ok, failed).", ["outcome"], registry=r
        )
        # The prediction log (monitoring.predictionlog).
        self.prediction_log_written = Counter(
            "prediction_log_written",
            "Predictions written to the prediction log (one table row per request and model).",
            registry=r,
        )
        self.prediction_log_dropped = Counter(
            "prediction_log_dropped",
            "Predictions not written to the prediction log, by reason "
            "(queue_full, write_error, shadow_error, closed).",
            ["reason"],
            registry=r,
        )
        self.prediction_log_queued = Gauge(
            "prediction_log_queued",
            "Predictions waiting for the prediction-log writer.",
            registry=r,
            multiprocess_mode="livesum",
        )
        # Drift of live inputs and predictions from the training data (monitoring.drift).
        self.feature_drift_psi = Gauge(
            "feature_drift_psi",
            "Population stability index of logged inputs (and 'prediction') against the "
            "training histograms: < 0.1 stable, 0.1-0.25 moderate, > 0.25 significant.",
            ["version", "feature"],
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.feature_drift_rows = Gauge(
            "feature_drift_sample_rows",
            "Logged predictions the last drift computation used, by model version.",
            ["version"],
            registry=r,
            multiprocess_mode="livemostrecent",
        )

    def refresh_runtime(self) -> None:
        """Under gunicorn, add this worker's GC progress to the shared counters."""
        if self.gc_counters is not None:
            self.gc_counters.refresh()

    def exposition(self) -> bytes:
        directory = multiprocess_dir()
        if directory is None:
            return generate_latest(self.registry)
        self.refresh_runtime()
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=directory)  # type: ignore[no-untyped-call]  # untyped lib
        add_server_collectors(merged)
        return generate_latest(merged)
