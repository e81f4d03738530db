"""Model artifacts on disk: written atomically, loaded only after their hash checks out.

Unpickling is code execution: ``joblib.load`` runs whatever the file tells it to.
Artifacts must therefore come only from ``housing-api train`` or a trusted pipeline,
and ``MODEL_DIR`` should be read-only to the serving process in production.

Layout: ``<model_dir>/<version>/model.joblib`` and ``manifest.json``, plus
``plan.json`` when the model has a prediction plan (``ml.plan``). The manifest
records the sha256 of ``model.joblib``; :func:`load_verified` hashes the file and
compares before joblib ever reads it, so a truncated, corrupted or swapped file is
refused instead of executed. The manifest sits beside the model, so this catches
accidents and partial tampering, not an attacker who can rewrite both: for that,
pin the expected hash out of band (``expected_sha256``, e.g. from deployment
config). The recorded library versions must equal the installed ones, because a
pickle from another scikit-learn may load and then answer differently.

A plan is what serving uses when there is one: plain JSON, so loading it needs
neither joblib nor scikit-learn (~100 MiB per worker). The manifest records its
sha256 and its predictions on fixed probe rows, both checked at load; training
writes a plan only after it answered as ``predict`` does. ``model.joblib`` is
still verified at load, and unpickled only if someone asks for
``LoadedModel.estimator``. A pinned hash pins ``model.joblib``, so a pinned load
serves that file and ignores the plan.

The price interval's parameters are an entry of the manifest itself (``interval``,
see ``ml.intervals``), validated whole at load: a manifest without one is refused.
So the server reads only the manifest and files whose sha256 it records.

Writes go to a temporary file in the same directory followed by ``os.replace``,
so a reader sees the old file or the new one, never half of one. The model and
plan are replaced before their manifest; a reader racing a retrain may see the new
model with the old manifest and refuse it (hash mismatch), which fails closed.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import logging
import math
import platform
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ml.features import FEATURES, MODEL_VERSIONS, ModelVersion, allowed_range, feature_names
from ml.intervals import PriceInterval, check_entry
from ml.plan import PlanError, load_plan, probe_rows

MODEL_FILE = "model.joblib"
MANIFEST_FILE = "manifest.json"
PLAN_FILE = "plan.json"
# Probe rows a plan's recorded predictions are computed on (ml.plan.probe_rows).
PROBE_ROWS, PROBE_SEED = 256, 0
# A plan's answers must equal the model's to this relative tolerance (the linear
# parts sum a dot product in another order than scikit-learn's BLAS call).
RTOL = 1e-12
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


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A verified model and its manifest; ``predict`` is the per-request entry point."""

    version: ModelVersion
    manifest: dict[str, Any] = field(repr=False)
    sha256: str
    feature_names: tuple[str, ...]
    # Allowed input range per column (ml.features.allowed_range), in feature order.
    lower: FloatArray = field(repr=False)
    upper: FloatArray = field(repr=False)
    # The conformal price interval (ml.intervals), from the manifest's ``interval``.
    interval: PriceInterval = field(repr=False)
    # "compiled" when a plan (or the compiled predictor) answers, else "estimator".
    predict_path: str = "estimator"
    _predict: Callable[[FloatArray], FloatArray] | None = field(default=None, repr=False)
    # The unpickled model; loaded on first use of ``estimator`` when a plan serves.
    _estimator: Any = field(default=None, repr=False)
    _model_path: Path | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def estimator(self) -> Any:
        """The scikit-learn model, unpickled on first access (after re-checking its sha256).

        Serving never needs it when a plan answers; tests and benchmarks do.
        """
        if self._estimator is None:
            with self._lock:
                if self._estimator is None:
                    if self._model_path is None:
                        raise ArtifactError(f"model {self.version}: no {MODEL_FILE} to load")
                    estimator = _unpickle_verified(self._model_path, self.sha256, self.version)
                    object.__setattr__(self, "_estimator", estimator)
        return self._estimator

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

    def predict_interval(self, X: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Prices, and the low and high ends of their ``interval.level`` ranges.

        ``predict`` followed by :meth:`interval_bounds`: each row's range depends on its
        price alone, so it is the same in any batch.
        """
        prices = self.predict(X)
        low, high = self.interval.bounds(prices)
        return prices, low, high

    def interval_bounds(self, prices: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Low and high ends for prices this model predicted (two multiplications)."""
        return self.interval.bounds(prices)

    @property
    def interval_coverage(self) -> float:
        """Share of held-out sales inside their range at training (nested; see manifest)."""
        return float(self.manifest["interval"]["coverage"])


def _read_bytes(path: Path) -> bytes:
    """A file's bytes, or an ArtifactError naming it."""
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise ArtifactError(f"{path}: missing; run `housing-api train`") from exc
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read ({exc.strerror})") from exc


def _read_manifest(path: Path, version: ModelVersion) -> dict[str, Any]:
    raw = _read_bytes(path)
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
    if "plan" in manifest:
        _check_plan_entry(path, manifest["plan"])
    return manifest


def _interval(path: Path, manifest: dict[str, Any]) -> PriceInterval:
    """The manifest's ``interval`` entry, validated whole (ml.intervals.check_entry)."""
    try:
        return check_entry(manifest.get("interval"))
    except ValueError as exc:
        raise ArtifactError(f"{path}: {exc}") from exc


def _check_plan_entry(path: Path, entry: Any) -> None:
    """The manifest's ``plan`` object: which file, its sha256, the recorded probe answers."""
    probe = entry.get("probe") if isinstance(entry, dict) else None
    predictions = probe.get("predictions") if isinstance(probe, dict) else None
    if not (
        isinstance(entry, dict)
        and set(entry) == {"file", "sha256", "model_sha256", "probe"}
        and entry["file"] == PLAN_FILE  # a name, never a path
        and all(
            isinstance(entry[k], str) and _SHA256.fullmatch(entry[k])
            for k in ("sha256", "model_sha256")
        )
        and isinstance(probe, dict)
        and set(probe) == {"rows", "seed", "predictions"}
        and type(probe["rows"]) is int
        and 1 <= probe["rows"] <= 4096
        and type(probe["seed"]) is int
        and probe["seed"] >= 0
        and isinstance(predictions, list)
        and len(predictions) == probe["rows"] + 2  # probe_rows adds two corners
        and all(type(p) is float and math.isfinite(p) for p in predictions)
    ):
        raise ArtifactError(
            f"{path}: plan entry malformed (expected file {PLAN_FILE!r}, sha256, "
            "model_sha256 and probe rows, seed and predictions)"
        )


def _fast_predictor(
    version: ModelVersion, estimator: Any
) -> tuple[str, Callable[[FloatArray], FloatArray] | None]:
    """The compiled predictor if it answers as the estimator does on probe rows."""
    from ml.plan_compiler import compile_predictor  # imports scikit-learn: no-plan artifacts only

    compiled = compile_predictor(estimator)
    if compiled is None:
        return "estimator", None
    probe = probe_rows(version)
    if np.allclose(compiled(probe), estimator.predict(probe), rtol=RTOL, atol=0.0):
        return "compiled", compiled
    logger.warning("model %s: compiled predictor disagrees with predict; not using it", version)
    return "estimator", None


def _load_plan(
    version: ModelVersion, plan_path: Path, manifest_path: Path, manifest: dict[str, Any]
) -> Callable[[FloatArray], FloatArray]:
    """The plan's predictor, after its sha256 and its answers on the probe rows check out."""
    entry = manifest["plan"]
    if entry["model_sha256"] != manifest["sha256"]:
        raise ArtifactError(
            f"{plan_path}: compiled from {MODEL_FILE} sha256 {entry['model_sha256']}, but "
            f"{manifest_path} records {manifest['sha256']}; retrain"
        )
    data = _read_bytes(plan_path)
    actual = hashlib.sha256(data).hexdigest()
    if actual != entry["sha256"]:
        raise ArtifactError(
            f"{plan_path}: sha256 {actual} does not match {entry['sha256']} recorded in "
            f"{manifest_path}; the file is corrupt or was replaced, retrain it"
        )
    try:
        predict = load_plan(data, n_features=len(feature_names(version)))
    except PlanError as exc:
        raise ArtifactError(f"{plan_path}: not a valid plan: {exc}") from exc
    probe = entry["probe"]
    expected = np.array(probe["predictions"], dtype=np.float64)
    try:
        actual_predictions = predict(probe_rows(version, probe["rows"], probe["seed"]))
        same = bool(np.allclose(actual_predictions, expected, rtol=RTOL, atol=0.0))
    except Exception:  # a validated plan should not raise; if it does, refuse it
        logger.exception("model %s: plan raised on the probe rows", version)
        same = False
    if not same:
        raise ArtifactError(
            f"{plan_path}: answers the probe rows differently than recorded in "
            f"{manifest_path}; refusing to serve it, retrain"
        )
    return predict


def _verify_hash(
    f: io.BufferedReader,
    model_path: Path,
    recorded: str,
    recorded_in: str,
    pinned: str | None = None,
) -> str:
    actual = hashlib.file_digest(f, "sha256").hexdigest()
    if actual != recorded:
        raise ArtifactError(
            f"{model_path}: sha256 {actual} does not match {recorded} recorded in "
            f"{recorded_in}; the file is corrupt or was replaced, retrain it"
        )
    if pinned is not None and actual != pinned.lower():
        raise ArtifactError(f"{model_path}: sha256 {actual} is not the pinned {pinned.lower()}")
    return actual


def _open_model(model_path: Path) -> io.BufferedReader:
    try:
        return model_path.open("rb")
    except FileNotFoundError as exc:
        raise ArtifactError(f"{model_path}: missing; run `housing-api train`") from exc
    except OSError as exc:
        raise ArtifactError(f"{model_path}: cannot read ({exc.strerror})") from exc


def _unpickle(f: io.BufferedReader, model_path: Path, version: ModelVersion) -> Any:
    """Unpickle an already verified file: the caller hashed these very bytes."""
    import joblib  # only when the scikit-learn model itself is needed

    f.seek(0)
    try:
        estimator = joblib.load(f)
    except Exception as exc:
        raise ArtifactError(f"{model_path}: cannot be loaded ({exc})") from exc
    n = len(feature_names(version))
    if not callable(getattr(estimator, "predict", None)) or (
        getattr(estimator, "n_features_in_", None) != n
    ):
        raise ArtifactError(f"{model_path}: not a fitted model taking {n} features")
    return estimator


def _unpickle_verified(model_path: Path, sha256: str, version: ModelVersion) -> Any:
    """For ``LoadedModel.estimator``: the file may have changed since the model was loaded."""
    with _open_model(model_path) as f:
        # Hash and unpickle through the same open file, so the bytes checked are the
        # bytes loaded even if the path is swapped in between.
        _verify_hash(f, model_path, sha256, "the loaded model")
        return _unpickle(f, model_path, version)


def load_verified(
    model_dir: Path, version: ModelVersion, *, expected_sha256: str | None = None
) -> LoadedModel:
    """Load one version after checking its manifest, hashes and library versions.

    With a plan, nothing is unpickled (nor scikit-learn imported) until someone asks
    for ``estimator``; without one, or with a pinned hash, the model is unpickled
    and serves as before.
    """
    if version not in MODEL_VERSIONS:
        raise ArtifactError(f"{model_dir}: unknown model version {version!r}")
    manifest_path = model_dir / version / MANIFEST_FILE
    model_path = model_dir / version / MODEL_FILE
    manifest = _read_manifest(manifest_path, version)
    interval = _interval(manifest_path, manifest)
    use_plan = "plan" in manifest and expected_sha256 is None

    estimator = None
    with _open_model(model_path) as f:
        actual = _verify_hash(
            f, model_path, manifest["sha256"], str(manifest_path), expected_sha256
        )
        mismatches = _version_mismatches(manifest["libraries"])
        if mismatches:
            raise ArtifactError(
                f"{manifest_path}: trained with other library versions "
                f"({'; '.join(mismatches)}); retrain with the installed ones"
            )
        if not use_plan:
            estimator = _unpickle(f, model_path, version)

    fast: Callable[[FloatArray], FloatArray] | None
    if use_plan:
        plan_path = model_dir / version / PLAN_FILE
        path, fast = "compiled", _load_plan(version, plan_path, manifest_path, manifest)
    else:
        path, fast = _fast_predictor(version, estimator)
    bounds = [allowed_range(f) for f in FEATURES[version]]
    return LoadedModel(
        version=version,
        manifest=manifest,
        sha256=actual,
        feature_names=tuple(feature_names(version)),
        lower=np.array([low for low, _ in bounds], dtype=np.float64),
        upper=np.array([high for _, high in bounds], dtype=np.float64),
        interval=interval,
        predict_path=path,
        _predict=fast,
        _estimator=estimator,
        _model_path=model_path,
    )


def load_all(model_dir: Path) -> dict[str, LoadedModel]:
    """Every version, verified; any failure raises, so the service never half-starts."""
    return {version: load_verified(model_dir, version) for version in MODEL_VERSIONS}
