"""Every setting of the service is documented in .env.example."""

from __future__ import annotations

import re
from pathlib import Path

from app.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def test_env_example_covers_every_setting() -> None:
    text = (REPO / ".env.example").read_text()
    # `NAME=value`, or commented out as `# NAME=value`.
    documented = set(re.findall(r"^(?:#\s*)?([A-Z][A-Z0-9_]*)=", text, re.MULTILINE))
    settings = {name.upper() for name in Settings.model_fields}
    assert settings - documented == set()
