"""Redocly CLI's linter, pinned (tools/node, installed by `make test-tools`), with its
``recommended`` rules: zero errors and zero warnings, with the password grant off and on."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.openapi.conftest import REPO

REDOCLY = REPO / "tools" / "node" / "node_modules" / ".bin" / "redocly"


def test_redocly_recommended_rules_find_nothing(document: dict[str, Any], tmp_path: Path) -> None:
    if not REDOCLY.exists():
        pytest.fail(f"{REDOCLY} is missing: run `make test-tools`", pytrace=False)
    path = tmp_path / "openapi.json"
    path.write_text(json.dumps(document))
    env = os.environ | {"REDOCLY_TELEMETRY": "off", "REDOCLY_SUPPRESS_UPDATE_NOTICE": "true"}
    result = subprocess.run(
        [str(REDOCLY), "lint", "--extends=recommended", "--format=json", str(path)],
        cwd=tmp_path,  # no redocly.yaml of anyone's: the recommended rules alone
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report = json.loads(result.stdout)
    problems = [f"{p['ruleId']}: {p['message']}" for p in report["problems"]]
    assert report["totals"] == {"errors": 0, "warnings": 0, "ignored": 0}, problems
    assert result.returncode == 0, result.stderr
