"""The README's first section, followed literally: its ``sh`` blocks run as written,
in order, in a fresh directory, against a real ``housing-api serve``.

The first block starts the server (``make run PORT=...`` in "Terminal 1"); the runner
starts exactly what ``make run`` starts (checked against ``make -n``) on a free port,
with the models already trained, and runs every other block in one ``bash`` with
``set -euo pipefail`` and ``PORT`` set, as a reader's second terminal would.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.support.app_server import app_env, running_app

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"


def first_section(text: str) -> str:
    """From the first ``## `` heading to the next one."""
    headings = [m.start() for m in re.finditer(r"^## ", text, re.M)]
    return text[headings[0] : headings[1]]


def sh_blocks(section: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```$", section, re.M | re.S)


def test_the_first_section_is_the_quick_start() -> None:
    section = first_section(README.read_text())
    assert section.startswith("## Quick start")
    blocks = sh_blocks(section)
    assert len(blocks) >= 2
    assert blocks[0].splitlines()[0] == "# Terminal 1"
    script = "\n".join(blocks[1:])
    for variable in ("CLIENT_ID", "CLIENT_SECRET", "TOKEN", "API_KEY"):
        assert re.search(rf"^{variable}=", script, re.M), f"where does ${variable} come from?"
    assert " open " not in f" {script} "  # macOS-only
    assert "/v1/keys" in script


def test_make_run_takes_a_port() -> None:
    result = subprocess.run(
        ["make", "-n", "--no-print-directory", "run", "PORT=8123"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert ".venv/bin/housing-api serve --host 127.0.0.1 --port 8123" in result.stdout


def test_the_quick_start_runs_as_written(tmp_path: Path, trained_model_dir: Path) -> None:
    [start, *rest] = sh_blocks(first_section(README.read_text()))
    assert re.fullmatch(r"# Terminal 1\nmake run PORT=\d+\n", start)
    root = tmp_path / "reader"
    root.mkdir()
    # The reader's checkout: the installed .venv, and models `make run` would have trained.
    (root / ".venv").symlink_to(REPO / ".venv")
    (root / "models").symlink_to(trained_model_dir)
    env = app_env({})  # the defaults: var/ and models/ in the current directory
    with running_app(root, env) as server:
        result = subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + "\n".join(rest)],
            cwd=root,
            env=env | {"PORT": str(server.port), "PATH": os.environ["PATH"]},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert result.stdout.count('"predicted_price"') == 2
    assert '"api_key":"hpa_' in result.stdout  # the key minted through POST /v1/keys
    assert '{"keys":[' in result.stdout
