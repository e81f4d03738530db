"""Replacing the models in service without a restart (SIGHUP or POST /admin/models/reload).

Every version is loaded and verified first (``ml.artifacts.load_verified``: manifest,
sha256 of ``model.joblib``, library versions, fitted shape) in a worker thread; only if
all pass is the models dict in service (``Services.models``) replaced, by one attribute
assignment, so a request sees the old dict or the new one, never a mix. A request
already running keeps the ``LoadedModel`` it resolved at its start and finishes on it.
If anything fails, the models in service stay, and the reason goes to the server log
(never to the caller: it names files and hashes).

Under gunicorn (``serve --workers N``) a request reaches one worker. Once the reload
succeeded there, that worker sends SIGHUP to its sibling workers (the other children
of the gunicorn master), and each verifies and swaps in place the same way: no
process restarts, no request waits. ``pkill -HUP -P <master pid>`` does the same from
a shell. ``kill -HUP <master pid>`` is gunicorn's own reload instead: it replaces
every worker gracefully (in-flight requests finish), but stops the old workers before
the new ones have loaded their models, so new connections wait that long, and a new
worker that cannot load its models makes gunicorn stop altogether.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ml.artifacts import ArtifactError, LoadedModel, load_verified
from ml.features import MODEL_VERSIONS
from monitoring.metrics import Metrics

logger = logging.getLogger("app.models")


class ReloadFailed(Exception):
    """A version failed verification; the models in service were kept."""

    def __init__(self, version: str, reason: str) -> None:
        super().__init__(f"{version}: {reason}")
        self.version = version
        self.reason = reason


@dataclass(frozen=True)
class Reloaded:
    version: str
    sha256: str
    previous_sha256: str | None
    estimator: str

    @property
    def changed(self) -> bool:
        return self.sha256 != self.previous_sha256


def estimator_name(model: LoadedModel) -> str:
    return str(model.manifest["estimator"]["name"])


def load_verified_models(model_dir: Path) -> dict[str, LoadedModel]:
    """Every version, verified; ``ReloadFailed`` names the first that is not usable."""
    models: dict[str, LoadedModel] = {}
    for version in MODEL_VERSIONS:
        try:
            models[version] = load_verified(model_dir, version)
        except ArtifactError as exc:
            raise ReloadFailed(version, str(exc)) from exc
        except Exception as exc:  # anything else in loading is a failed reload too, not a 500
            logger.exception("model %s: unexpected error while loading", version)
            raise ReloadFailed(version, f"unexpected error: {exc!r}") from exc
    return models


def publish_model_info(
    metrics: Metrics, old: dict[str, LoadedModel], new: dict[str, LoadedModel]
) -> None:
    """``model_info``: 1 for each model now in service, 0 for the ones it replaced."""
    for version, model in old.items():
        replacement = new.get(version)
        if replacement is None or replacement.sha256 != model.sha256:
            metrics.model_info.labels(version, model.sha256, estimator_name(model)).set(0)
    for version, model in new.items():
        metrics.model_info.labels(version, model.sha256, estimator_name(model)).set(1)


def under_gunicorn() -> bool:
    """gunicorn's master exports SERVER_SOFTWARE=gunicorn/<version> to its workers."""
    return os.environ.get("SERVER_SOFTWARE", "").startswith("gunicorn/")


class ModelsInService(Protocol):
    """Whatever holds the models requests read (``app.state.Services``)."""

    models: dict[str, LoadedModel]


class ModelReloader:
    """One reload at a time per process; a second caller waits and reloads after it."""

    def __init__(self, serving: ModelsInService, model_dir: Path, metrics: Metrics) -> None:
        self._serving = serving
        self._model_dir = model_dir
        self._metrics = metrics
        self._lock = asyncio.Lock()

    async def reload(self, *, source: str) -> list[Reloaded]:
        async with self._lock:
            old: dict[str, LoadedModel] = self._serving.models
            try:
                new = await asyncio.to_thread(load_verified_models, self._model_dir)
            except ReloadFailed as exc:
                self._metrics.model_reloads.labels("failed").inc()
                logger.error(
                    "model reload refused; the models in service were kept",
                    extra={"source": source, "version": exc.version, "reason": exc.reason},
                )
                raise
            self._serving.models = new  # one assignment: atomic for every reader
            publish_model_info(self._metrics, old, new)
            self._metrics.model_reloads.labels("ok").inc()
            outcome = [
                Reloaded(
                    version=version,
                    sha256=model.sha256,
                    previous_sha256=old[version].sha256 if version in old else None,
                    estimator=estimator_name(model),
                )
                for version, model in new.items()
            ]
            logger.info(
                "models reloaded",
                extra={
                    "source": source,
                    "models": {r.version: r.sha256 for r in outcome},
                    "changed": [r.version for r in outcome if r.changed],
                },
            )
            return outcome

    def signal_other_workers(self) -> int:
        """Under gunicorn: SIGHUP to this worker's siblings, each of which then verifies
        and swaps its models in place (see ``app.lifespan``). How many."""
        if not under_gunicorn():
            return 0
        siblings = sibling_workers()
        for pid in siblings:
            with contextlib.suppress(ProcessLookupError):  # exited meanwhile
                os.kill(pid, signal.SIGHUP)
        logger.info("asked the other workers to reload", extra={"workers": siblings})
        return len(siblings)


def sibling_workers() -> list[int]:
    """The other children of this process's parent (the gunicorn master), from /proc."""
    master, me = os.getppid(), os.getpid()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        # Fields after "(comm)": state, ppid, ...
        if int(stat.rsplit(")", 1)[1].split()[1]) == master:
            pids.append(int(entry.name))
    return sorted(pids)
