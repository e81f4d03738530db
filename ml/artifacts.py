"""Model artifacts on disk: written atomically, loaded only after their hash checks out.

Unpickling is code execution: ``joblib.load`` runs whatever the file tells it to.
Artifacts must therefore come only from ``housing-api train`` or a trusted pipeline,
and ``MODEL_DIR`` should be read-only to the serving process in production.

Layout: ``<model_dir>/<version>/model.joblib`` and ``manifest.json``. The manifest
records the sha256 of ``model.joblib``; :func:`load_verified` hashes the file and
compares before joblib ever reads it, so a truncated, corrupted or swapped file is
refused instead of executed. The manifest sits beside the model, so this catches
accidents and partial tampering, not an attacker who can rewrite both: for that,
pin the expected hash out of band (``expected_sha256``, e.g. from deployment
config). The recorded library versions must equal the installed ones, because a
pickle from another scikit-learn may load and then answer differently.

Writes go to a temporary file in the same directory followed by ``os.replace``,
so a reader sees the old file or the new one, never half of one. The model is
replaced before its manifest; a reader racing a retrain may see the new model
with the old manifest and refuse it (hash mismatch), which fails closed.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import io
import json
import logging
import os
import platform
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import numpy.typing as npt

from ml.fastpath import compile_predictor, probe_rows
from ml.features import FEATURES, MODEL_VERSIONS, ModelVersion, allowed_range, feature_names

MODEL_FILE = "model.joblib"
MANIFEST_FILE = "manifest.json"
LIBRARIES = ("numpy", "scikit-learn", "scipy", "joblib")

FloatArray = npt.NDArray[np.float64]
_SHA256 = re.compile(r"[0-9a-f]{64}")

logger = logging.getLogger(__name__)


class ArtifactError(Exception):
    """A model artifact is missing, malformed or not the one its manifest describes.

    The message names the offending file and what is wrong with it.
    """


def library_versions() -> dict[str, str]:
    """Versions that decide whether a pickle loads and answers as it did in training."""
    versions = {"python": platform.python_version()}
    versions.update({name: importlib.metadata.version(name) for name in LIBRARIES})
    return versions


def _version_mismatches(recorded: dict[str, Any]) -> list[str]:
    """Differences from the installed versions; Python is compared up to the minor version.

    A Python patch release does not change pickles or numerics, and refusing models
    over one would turn every base-image update into a retrain.
    """
    installed = library_versions()
    problems = []
    for name, now in installed.items():
        then = recorded.get(name)
        if name == "python" and isinstance(then, str):
            same = then.split(".")[:2] == now.split(".")[:2]
        else:
            same = then == now
        if not same:
            problems.append(f"{name} {then} recorded, {now} installed")
    return problems


def sha256_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


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
    model_dir: Path, version: ModelVersion, estimator: Any, manifest: dict[str, Any]
) -> dict[str, Any]:
    """Write ``model.joblib`` then ``manifest.json`` (with the model's sha256 added)."""
    target = model_dir / version
    target.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    joblib.dump(estimator, buffer)
    model_bytes = buffer.getvalue()
    manifest = {**manifest, "sha256": hashlib.sha256(model_bytes).hexdigest()}
    _write_atomic(target / MODEL_FILE, model_bytes)
    text = json.dumps(manifest, indent=2, sort_keys=False, allow_nan=False) + "\n"
    _write_atomic(target / MANIFEST_FILE, text.encode("utf-8"))
    return manifest


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A verified model and its manifest; ``predict`` is the per-request entry point."""

    version: ModelVersion
    manifest: dict[str, Any] = field(repr=False)
    sha256: str
    feature_names: tuple[str, ...]
    estimator: Any = field(repr=False)
    # Allowed input range per column (ml.features.allowed_range), in feature order.
    lower: FloatArray = field(repr=False)
    upper: FloatArray = field(repr=False)
    # "compiled" when the fast path passed its self-check, else "estimator".
    predict_path: str = "estimator"
    _predict: Callable[[FloatArray], FloatArray] | None = field(default=None, repr=False)

    def predict(self, X: FloatArray) -> FloatArray:
        """Prices for a float64 array of shape (n, n_features), columns in feature order.

        Refuses (ValueError) anything else, including NaN, infinities and values
        outside the allowed ranges: the HTTP layer checks these first, and this
        keeps a caller that bypasses it from feeding the model absurd input.
        """
        n = len(self.feature_names)
        if not (
            isinstance(X, np.ndarray) and X.dtype == np.float64 and X.ndim == 2 and X.shape[1] == n
        ):
            raise ValueError(
                f"expected a float64 array of shape (rows, {n}) with columns {self.feature_names}"
            )
        if X.shape[0] == 0:
            raise ValueError("expected at least one row")
        if not np.isfinite(X).all():
            raise ValueError("input contains NaN or infinity")
        outside = np.less(X, self.lower) | np.greater(X, self.upper)
        if outside.any():
            j = int(np.argmax(outside.any(axis=0)))
            raise ValueError(
                f"{self.feature_names[j]} outside the allowed range "
                f"[{self.lower[j]:g}, {self.upper[j]:g}]"
            )
        predict = self._predict if self._predict is not None else self.estimator.predict
        return np.asarray(predict(X), dtype=np.float64)


def _read_manifest(path: Path, version: ModelVersion) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise ArtifactError(f"{path}: missing; run `housing-api train`") from exc
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read ({exc.strerror})") from exc
    try:
        manifest = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{path}: expected a JSON object")
    if manifest.get("version") != version:
        raise ArtifactError(f"{path}: version is {manifest.get('version')!r}, expected {version!r}")
    sha = manifest.get("sha256")
    if not (isinstance(sha, str) and _SHA256.fullmatch(sha)):
        raise ArtifactError(f"{path}: sha256 missing or not 64 lowercase hex digits")
    if not isinstance(manifest.get("libraries"), dict):
        raise ArtifactError(f"{path}: libraries missing")
    features = manifest.get("features")
    names = (
        [f.get("name") if isinstance(f, dict) else None for f in features]
        if isinstance(features, list)
        else None
    )
    if names != feature_names(version):
        raise ArtifactError(
            f"{path}: features {names} differ from ml/features.py {feature_names(version)}"
        )
    return manifest


def _fast_predictor(
    version: ModelVersion, estimator: Any
) -> tuple[str, Callable[[FloatArray], FloatArray] | None]:
    """The compiled predictor if it answers as the estimator does on probe rows."""
    compiled = compile_predictor(estimator)
    if compiled is None:
        return "estimator", None
    probe = probe_rows(version)
    if np.allclose(compiled(probe), estimator.predict(probe), rtol=1e-12, atol=0.0):
        return "compiled", compiled
    logger.warning("model %s: compiled predictor disagrees with predict; not using it", version)
    return "estimator", None


def load_verified(
    model_dir: Path, version: ModelVersion, *, expected_sha256: str | None = None
) -> LoadedModel:
    """Load one version after checking its manifest, hash and library versions."""
    if version not in MODEL_VERSIONS:
        raise ArtifactError(f"{model_dir}: unknown model version {version!r}")
    manifest_path = model_dir / version / MANIFEST_FILE
    model_path = model_dir / version / MODEL_FILE
    manifest = _read_manifest(manifest_path, version)
    recorded = manifest["sha256"]

    try:
        f = model_path.open("rb")
    except FileNotFoundError as exc:
        raise ArtifactError(f"{model_path}: missing; run `housing-api train`") from exc
    except OSError as exc:
        raise ArtifactError(f"{model_path}: cannot read ({exc.strerror})") from exc
    with f:
        # Hash and unpickle through the same open file, so the bytes checked are the
        # bytes loaded even if the path is swapped in between.
        actual = hashlib.file_digest(f, "sha256").hexdigest()
        if actual != recorded:
            raise ArtifactError(
                f"{model_path}: sha256 {actual} does not match {recorded} recorded in "
                f"{manifest_path}; the file is corrupt or was replaced, retrain it"
            )
        if expected_sha256 is not None and actual != expected_sha256.lower():
            raise ArtifactError(
                f"{model_path}: sha256 {actual} is not the pinned {expected_sha256.lower()}"
            )
        mismatches = _version_mismatches(manifest["libraries"])
        if mismatches:
            raise ArtifactError(
                f"{manifest_path}: trained with other library versions "
                f"({'; '.join(mismatches)}); retrain with the installed ones"
            )
        f.seek(0)
        try:
            estimator = joblib.load(f)
        except Exception as exc:
            raise ArtifactError(f"{model_path}: cannot be loaded ({exc})") from exc

    names = tuple(feature_names(version))
    if not callable(getattr(estimator, "predict", None)) or (
        getattr(estimator, "n_features_in_", None) != len(names)
    ):
        raise ArtifactError(f"{model_path}: not a fitted model taking {len(names)} features")
    bounds = [allowed_range(f) for f in FEATURES[version]]
    path, fast = _fast_predictor(version, estimator)
    return LoadedModel(
        version=version,
        manifest=manifest,
        sha256=actual,
        feature_names=names,
        estimator=estimator,
        lower=np.array([low for low, _ in bounds], dtype=np.float64),
        upper=np.array([high for _, high in bounds], dtype=np.float64),
        predict_path=path,
        _predict=fast,
    )


def load_all(model_dir: Path) -> dict[str, LoadedModel]:
    """Every version, verified; any failure raises, so the service never half-starts."""
    return {version: load_verified(model_dir, version) for version in MODEL_VERSIONS}
