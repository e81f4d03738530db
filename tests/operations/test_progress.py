"""Long work shows its progress on stderr (rich): training per candidate with its CV
score, the export's running count, drift per version, the benchmark's phases."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from rich.console import Console

from bench import progress as bench_progress
from ml.candidates import CANDIDATES
from tests.conftest import DATA_PATH
from tests.support.app_server import app_env, run_cli

pytestmark = pytest.mark.slow

CANDIDATE_LINE = re.compile(r"^(v[12]) (\S+) +CV MAE +[\d,]+  R² -?\d\.\d{3}$", re.M)


def test_training_prints_each_candidates_cv_score(tmp_path: Path) -> None:
    env = app_env(
        {"VAR_DIR": str(tmp_path / "var"), "MODEL_DIR": str(tmp_path / "models"),
         "DATA_PATH": str(DATA_PATH)}
    )  # fmt: skip
    result = run_cli(env, tmp_path, "train", "--folds", "2")
    lines = CANDIDATE_LINE.findall(result.stderr)
    names = [candidate.name for candidate in CANDIDATES]
    assert lines == [("v1", name) for name in names] + [("v2", name) for name in names]
    total = 2 * len(CANDIDATES)
    assert f"{total}/{total}" in result.stderr  # the bar's last state
    assert result.stdout.count("CV MAE") == 2  # the chosen models' summary, as before


def test_export_and_drift_show_progress(tmp_path: Path, trained_model_dir: Path) -> None:
    env = app_env({"VAR_DIR": str(tmp_path / "var"), "MODEL_DIR": str(trained_model_dir)})
    exported = run_cli(env, tmp_path, "predictions", "export", "-o", str(tmp_path / "p.csv"))
    assert "exporting to" in exported.stderr
    assert "wrote 0 predictions" in exported.stderr
    drift = run_cli(env, tmp_path, "drift")
    assert "drift v2: 0 predictions" in drift.stderr
    assert "2/2" in drift.stderr


def test_the_benchmark_announces_its_phases(monkeypatch: pytest.MonkeyPatch) -> None:
    screen = io.StringIO()
    monkeypatch.setattr(bench_progress, "CONSOLE", Console(file=screen, width=100))
    with bench_progress.phases(3) as next_phase:
        for name in ("setup", "load test", "profile"):
            next_phase(name)
    assert "benchmark done" in screen.getvalue()
    assert "3/3" in screen.getvalue()
