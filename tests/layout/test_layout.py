"""The layout the README's "Layout" section promises, checked on the source itself.

Each top-level package may import only the packages listed for it (ours; third-party
libraries are free), the web framework stays in ``app/``, modules and classes stay
small, and every package the wheel ships is also what the Dockerfile copies.
"""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WHEEL = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"][
    "wheel"
]["packages"]
# Package -> the packages of ours it may import (besides itself).
MAY_IMPORT: dict[str, set[str]] = {
    "db": set(),
    "ml": set(),
    "auth": {"db"},
    "monitoring": {"db", "ml"},
    "migrations": {"db", "auth", "monitoring"},
    "app": {"db", "auth", "ml", "monitoring", "migrations"},
    "cli": {"app.settings", "db", "auth", "ml", "monitoring", "migrations"},
}
WEB_FRAMEWORKS = ("fastapi", "starlette", "uvicorn", "slowapi", "gunicorn")
MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 300


def _modules(package: str) -> Iterator[Path]:
    yield from sorted((REPO / package).rglob("*.py"))


def _imports(path: Path) -> Iterator[str]:
    """Every module name ``path`` imports, at any depth (lazy imports included)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _allowed(name: str, package: str) -> bool:
    top = name.split(".")[0]
    if top not in MAY_IMPORT or top == package:
        return True
    return any(name == ok or name.startswith(ok + ".") for ok in MAY_IMPORT[package]) or any(
        ok.startswith(name + ".")
        for ok in MAY_IMPORT[package]  # "from app import settings"
    )


def test_the_wheel_ships_every_product_package() -> None:
    assert set(WHEEL) == set(MAY_IMPORT)


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_packages_import_only_downward(package: str) -> None:
    wrong = [
        f"{path.relative_to(REPO)} imports {name}"
        for path in _modules(package)
        for name in _imports(path)
        if not _allowed(name, package)
    ]
    assert wrong == []


@pytest.mark.parametrize("package", ["auth", "db", "migrations", "ml", "monitoring"])
def test_no_web_framework_outside_app_and_cli(package: str) -> None:
    found = [
        f"{path.relative_to(REPO)} imports {name}"
        for path in _modules(package)
        for name in _imports(path)
        if name.split(".")[0] in WEB_FRAMEWORKS
    ]
    assert found == []


def test_modules_and_classes_stay_small() -> None:
    too_big = []
    for package in MAY_IMPORT:
        for path in _modules(package):
            source = path.read_text()
            if source.count("\n") > MAX_MODULE_LINES:
                too_big.append(f"{path.relative_to(REPO)}: {source.count(chr(10))} lines")
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.ClassDef):
                    lines = (node.end_lineno or node.lineno) - node.lineno + 1
                    if lines > MAX_CLASS_LINES:
                        too_big.append(f"{path.relative_to(REPO)}:{node.name}: {lines} lines")
    assert too_big == []


def test_the_dockerfile_copies_exactly_the_wheel_packages() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\w+) \./\1$", dockerfile, re.M)) - {"data"}
    assert copied == set(WHEEL)
    allowed = {
        line[1:].strip().rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    assert set(WHEEL) <= allowed


def test_every_top_level_python_package_is_placed() -> None:
    """A new top-level package must be added to the wheel (and the table above), or be
    one of the development-only trees."""
    development = {"tests", "bench", "deploy", "fuzz", "tools"}
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")}
    assert packages - development == set(WHEEL)
