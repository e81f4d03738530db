"""The built wheel is a working install: every package, the migrations and the CLI.

No Docker engine runs here, so this stands in for the image: the Dockerfile installs
this same wheel (``uv sync --no-editable``), and tests/layout/test_layout.py keeps its
COPY lines equal to the wheel's packages.
"""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.layout.test_layout import WHEEL

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
UV = REPO / ".tools" / "bin" / "uv"  # bootstrapped by the Makefile


def run(*argv: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


def test_housing_api_runs_from_the_wheel_in_a_fresh_venv(tmp_path: Path) -> None:
    assert UV.exists(), "run `make install` first: it bootstraps uv into .tools/"
    run(UV, "build", "--wheel", "--out-dir", tmp_path / "dist", cwd=REPO)
    [wheel] = (tmp_path / "dist").glob("*.whl")
    shipped = {name.split("/", 1)[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert set(WHEEL) <= shipped
    locked = run(UV, "export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project", cwd=REPO)
    (tmp_path / "requirements.txt").write_text(locked)
    venv = tmp_path / "venv"
    run(UV, "venv", "--python", "python3", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    run(UV, "pip", "install", "--python", python, "-r", "requirements.txt", wheel, cwd=tmp_path)

    elsewhere = tmp_path / "elsewhere"  # not the repository: nothing imported from it
    elsewhere.mkdir()
    assert "Usage: housing-api" in run(venv / "bin" / "housing-api", "--help", cwd=elsewhere)
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "VAR_DIR": str(elsewhere / "var"),
        "DATABASE_URL": f"sqlite:///{elsewhere / 'var' / 'housing.db'}",
    }
    # An empty database gets the schema from the migrations shipped in the wheel.
    created = run(
        venv / "bin" / "housing-api",
        "keys",
        "create",
        "--owner",
        "wheel",
        "--scopes",
        "predict",
        "--json",
        cwd=elsewhere,
        env=env,
    )
    assert '"api_key"' in created
    imported = run(
        python,
        "-c",
        "import app, migrations; print(app.__file__, migrations.__file__)",
        cwd=elsewhere,
    )
    assert all(path.startswith(str(venv)) for path in imported.split())
