"""Gunicorn hooks and settings (``--config python:app.gunicorn_conf``)."""

from __future__ import annotations

from typing import Any

from monitoring.logs import logging_config

# The master logs JSON too (its start, workers booting and exiting, signals), like the
# workers: one format for the whole stderr.
logconfig_dict = logging_config()


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges from the multiprocess metrics directory."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]  # untyped lib


def post_worker_init(worker: Any) -> None:
    """Ignore SIGHUP until the app's lifespan installs its handler (a model reload):
    gunicorn resets it to the default (terminate) when a worker starts, and a sibling's
    reload may signal a worker that is still loading."""
    import signal

    signal.signal(signal.SIGHUP, signal.SIG_IGN)
