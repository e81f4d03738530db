"""Loading refuses anything that is not exactly what training wrote, before unpickling it."""

from __future__ import annotations

import dataclasses
import json
import pickle
import re
from pathlib import Path
from typing import Any

import joblib
import pytest

from ml.artifacts import (
    MANIFEST_FILE,
    MODEL_FILE,
    PLAN_FILE,
    ArtifactError,
    library_versions,
    load_all,
    load_verified,
)
from ml.features import MODEL_VERSIONS, ModelVersion, feature_names

VERSIONS = pytest.mark.parametrize("version", MODEL_VERSIONS)


def _edit_manifest(model_dir: Path, version: str, changes: dict[str, Any]) -> Path:
    path = model_dir / version / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))
    return path


def _refused(match_path: Path, *more: str) -> Any:
    pattern = re.escape(str(match_path)) + "".join(f".*{m}" for m in more)
    return pytest.raises(ArtifactError, match=pattern)


@VERSIONS
def test_load_verified(trained_model_dir: Path, version: ModelVersion) -> None:
    model = load_verified(trained_model_dir, version)
    assert model.version == version
    assert model.feature_names == tuple(feature_names(version))
    assert model.sha256 == model.manifest["sha256"]
    assert model.predict_path == "compiled"
    assert "manifest" not in repr(model)  # logs stay one line


def test_load_all_and_immutability(trained_model_dir: Path) -> None:
    models = load_all(trained_model_dir)
    assert list(models) == list(MODEL_VERSIONS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        models["v1"].sha256 = "0" * 64


@VERSIONS
def test_one_changed_byte_is_refused_naming_the_file(
    model_copy: Path, version: ModelVersion
) -> None:
    model_path = model_copy / version / MODEL_FILE
    data = bytearray(model_path.read_bytes())
    data[len(data) // 2] ^= 0x01
    model_path.write_bytes(bytes(data))
    with _refused(model_path, "does not match"):
        load_verified(model_copy, version)


def test_manifest_recording_another_hash_is_refused(model_copy: Path) -> None:
    _edit_manifest(model_copy, "v1", {"sha256": "ab" * 32})
    with _refused(model_copy / "v1" / MODEL_FILE, "does not match " + "ab" * 32):
        load_verified(model_copy, "v1")


class _Payload:
    """Unpickling this creates a file: proof of whether joblib.load ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_a_swapped_pickle_is_never_unpickled(model_copy: Path, tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    evil = tmp_path / "evil.joblib"
    evil.write_bytes(pickle.dumps(_Payload(marker)))
    joblib.load(evil)  # positive control: loading it does run code
    assert marker.exists()
    marker.unlink()

    model_path = model_copy / "v1" / MODEL_FILE
    model_path.write_bytes(evil.read_bytes())
    with _refused(model_path, "does not match"):
        load_verified(model_copy, "v1")
    assert not marker.exists()


@pytest.mark.parametrize("library", ["scikit-learn", "numpy", "scipy", "joblib"])
def test_other_library_versions_are_refused(model_copy: Path, library: str) -> None:
    recorded = {**library_versions(), library: "0.0.1"}
    manifest_path = _edit_manifest(model_copy, "v2", {"libraries": recorded})
    with _refused(manifest_path, f"{library} 0.0.1 recorded"):
        load_verified(model_copy, "v2")


def test_python_patch_releases_are_accepted_minor_releases_not(model_copy: Path) -> None:
    major, minor, _ = library_versions()["python"].split(".")
    _edit_manifest(
        model_copy, "v1", {"libraries": {**library_versions(), "python": f"{major}.{minor}.0"}}
    )
    load_verified(model_copy, "v1")
    other = f"{major}.{int(minor) + 1}.0"
    path = _edit_manifest(model_copy, "v1", {"libraries": {**library_versions(), "python": other}})
    with _refused(path, f"python {other} recorded"):
        load_verified(model_copy, "v1")


@pytest.mark.parametrize("name", [MANIFEST_FILE, MODEL_FILE])
def test_missing_files(model_copy: Path, name: str) -> None:
    (model_copy / "v2" / name).unlink()
    with _refused(model_copy / "v2" / name, "missing"):
        load_verified(model_copy, "v2")


def test_missing_directory(tmp_path: Path) -> None:
    with _refused(tmp_path / "v1" / MANIFEST_FILE, "missing"):
        load_all(tmp_path)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_unreadable_manifest(model_copy: Path, content: str | bytes, problem: str) -> None:
    path = model_copy / "v1" / MANIFEST_FILE
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with _refused(path, problem):
        load_verified(model_copy, "v1")


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"version": "v2"}, "version is 'v2'"),
        ({"sha256": "not-a-hash"}, "sha256 missing"),
        ({"libraries": None}, "libraries missing"),
        ({"features": [{"name": "lotsize"}]}, "features"),
    ],
)
def test_malformed_manifest(model_copy: Path, changes: dict[str, Any], problem: str) -> None:
    path = _edit_manifest(model_copy, "v1", changes)
    with _refused(path, re.escape(problem)):
        load_verified(model_copy, "v1")


def test_a_pinned_hash_must_match_too(trained_model_dir: Path) -> None:
    actual = load_verified(trained_model_dir, "v1").sha256
    load_verified(trained_model_dir, "v1", expected_sha256=actual.upper())
    with _refused(trained_model_dir / "v1" / MODEL_FILE, "not the pinned"):
        load_verified(trained_model_dir, "v1", expected_sha256="0" * 64)


def test_a_model_for_the_wrong_version_is_refused(model_copy: Path) -> None:
    """v1's file under v2 with a matching manifest hash: right bytes, wrong model.

    v2's plan records the pickle it was compiled from, so the swap is refused before
    anything is unpickled; without a plan, unpickling finds the wrong feature count.
    """
    v1_bytes = (model_copy / "v1" / MODEL_FILE).read_bytes()
    (model_copy / "v2" / MODEL_FILE).write_bytes(v1_bytes)
    v1_sha = json.loads((model_copy / "v1" / MANIFEST_FILE).read_text())["sha256"]
    _edit_manifest(model_copy, "v2", {"sha256": v1_sha})
    with _refused(model_copy / "v2" / PLAN_FILE, "compiled from model.joblib"):
        load_verified(model_copy, "v2")
    path = model_copy / "v2" / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    del manifest["plan"]
    path.write_text(json.dumps(manifest))
    with _refused(model_copy / "v2" / MODEL_FILE, "11 features"):
        load_verified(model_copy, "v2")


def test_unknown_version(trained_model_dir: Path) -> None:
    with pytest.raises(ArtifactError, match="unknown model version 'v3'"):
        load_verified(trained_model_dir, "v3")
