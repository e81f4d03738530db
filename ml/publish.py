"""Writing a model's artifacts for ``ml.artifacts`` to verify and serve: the pickle, its
plan (only once it answers as the model's own ``predict``), and the manifest that pins
both by sha256. Training only: serving reads, it never writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ml.artifacts import (
    MANIFEST_FILE,
    MODEL_FILE,
    PLAN_FILE,
    PROBE_ROWS,
    PROBE_SEED,
    RTOL,
    FloatArray,
)
from ml.features import ModelVersion, feature_names
from ml.plan import load_plan, plan_to_json, probe_rows

logger = logging.getLogger(__name__)


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600; the server may run as another user than training.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def save_artifacts(
    model_dir: Path,
    version: ModelVersion,
    estimator: Any,
    manifest: dict[str, Any],
    *,
    training_rows: FloatArray | None = None,
) -> dict[str, Any]:
    """Write ``model.joblib``, ``plan.json`` if the model has a verified plan, then
    ``manifest.json`` with their sha256 (any ``sha256`` or ``plan`` passed in is stale
    and replaced). ``training_rows``, if given, are checked as well as the probe rows."""
    import joblib  # training only: serving workers never import it

    target = model_dir / version
    target.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    joblib.dump(estimator, buffer)
    model_bytes = buffer.getvalue()
    sha256 = hashlib.sha256(model_bytes).hexdigest()
    manifest = {k: v for k, v in manifest.items() if k not in ("sha256", "plan")}
    manifest["sha256"] = sha256
    plan = _verified_plan(version, estimator, training_rows)
    _write_atomic(target / MODEL_FILE, model_bytes)
    if plan is not None:
        plan_bytes, probe_predictions = plan
        _write_atomic(target / PLAN_FILE, plan_bytes)
        manifest["plan"] = {
            "file": PLAN_FILE,
            "sha256": hashlib.sha256(plan_bytes).hexdigest(),
            "model_sha256": sha256,
            "probe": {"rows": PROBE_ROWS, "seed": PROBE_SEED, "predictions": probe_predictions},
        }
    text = json.dumps(manifest, indent=2, sort_keys=False, allow_nan=False) + "\n"
    _write_atomic(target / MANIFEST_FILE, text.encode("utf-8"))
    if plan is None:  # after the manifest: a reader of the old one may still need it
        with contextlib.suppress(FileNotFoundError):
            (target / PLAN_FILE).unlink()
    return manifest


def _verified_plan(
    version: ModelVersion, estimator: Any, training_rows: FloatArray | None
) -> tuple[bytes, list[float]] | None:
    """The model's plan as JSON and its probe predictions, if it answers as ``predict``."""
    from ml.plan_compiler import plan_for  # imports scikit-learn

    plan = plan_for(estimator)
    if plan is None:
        logger.info("model %s: no plan for %s; served by its own predict", version, estimator)
        return None
    data = plan_to_json(plan)
    predict = load_plan(data, n_features=len(feature_names(version)))
    probe = probe_rows(version, PROBE_ROWS, PROBE_SEED)
    for name, rows in (("probe", probe), ("training", training_rows)):
        if rows is None:
            continue
        ours = predict(rows)
        if not np.allclose(ours, estimator.predict(rows), rtol=RTOL, atol=0.0):
            problem = "answers differently from predict"
        elif not np.array_equal(np.concatenate([predict(row[None]) for row in rows]), ours):
            problem = "answers a row differently alone than in a batch"
        else:
            continue
        logger.warning("model %s: plan not written: it %s on the %s rows", version, problem, name)
        return None
    return data, [float(p) for p in predict(probe)]
