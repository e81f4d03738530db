"""The OpenAPI document of a real app, with the password grant off (the default) and on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.main import create_app
from app.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def build_document(base: Path, model_dir: Path, *, password_grant: bool) -> dict[str, Any]:
    settings = Settings(
        _env_file=None,
        var_dir=base / "var",
        model_dir=model_dir,
        redis_url=None,
        password_grant_enabled=password_grant,
    )
    document: dict[str, Any] = create_app(settings).openapi()
    return document


@pytest.fixture(scope="module", params=[False, True], ids=["password-off", "password-on"])
def document(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The document as ``GET /openapi.json`` serves it (no lifespan needed to build it)."""
    base = tmp_path_factory.mktemp("openapi")
    return build_document(base, base / "models", password_grant=request.param)
