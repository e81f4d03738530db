"""The Dockerfile, read without a Docker engine: multi-stage, a pinned base, locked
dependencies, models trained and verified at build, a non-root user, a healthcheck,
gunicorn with uvicorn workers through `housing-api serve --workers`."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages); continuation lines joined, comments dropped."""
    logical = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")),
    )
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical.splitlines():
        if not line.strip():
            continue
        keyword, _, rest = line.strip().partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], name))
        elif not stages and keyword == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    return parse((REPO / "Dockerfile").read_text())


def test_multi_stage_on_a_pinned_slim_python(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    args, stages = dockerfile
    assert len(stages) >= 2
    assert [s.name for s in stages] == ["build", "runtime"]
    base = args["PYTHON_IMAGE"]
    # An exact release and Debian version (a digest may be appended), never "latest".
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base), base
    assert all(s.base == "${PYTHON_IMAGE}" for s in stages)


def test_locked_dependencies_with_the_makefiles_uv(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    _, (build, _runtime) = dockerfile
    makefile = (REPO / "Makefile").read_text()
    uv_version = re.search(r"^UV_VERSION := (\S+)$", makefile, re.MULTILINE)
    assert uv_version is not None
    assert f"UV_VERSION={uv_version[1]}" in build.all("ARG")
    syncs = [run for run in build.all("RUN") if "uv sync" in run]
    assert syncs
    assert all("--frozen" in run for run in syncs)


def test_models_are_trained_at_build_and_verified_in_the_final_image(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    _, (build, runtime) = dockerfile
    assert any("housing-api train" in run for run in build.all("RUN"))
    assert any("--from=build" in copy and "models" in copy for copy in runtime.all("COPY"))
    assert any("load_all" in run for run in runtime.all("RUN"))  # sha256-verified


def test_the_final_stage_runs_unprivileged_without_compilers(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    _, (_build, runtime) = dockerfile
    [user] = runtime.all("USER")
    uid = user.split(":")[0]
    assert uid not in {"0", "root"}
    assert uid.isdigit()  # numeric, so runAsNonRoot can check it
    runs = " ".join(runtime.all("RUN"))
    for compiler in ("gcc", "g++", "build-essential", "clang"):
        assert f"install {compiler}" not in runs
        assert f" {compiler} " not in runs.replace("command -v gcc", "")
    assert "command -v gcc" in runs  # the build fails if one slipped in


def test_healthcheck_and_gunicorn_entrypoint(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    _, (_build, runtime) = dockerfile
    [healthcheck] = runtime.all("HEALTHCHECK")
    assert "/healthz" in healthcheck
    assert "--interval=" in healthcheck
    assert "--timeout=" in healthcheck
    [entrypoint] = runtime.all("ENTRYPOINT")
    [cmd] = runtime.all("CMD")
    argv = json.loads(entrypoint) + json.loads(cmd)
    assert argv[:2] == ["housing-api", "serve"]
    assert int(argv[argv.index("--workers") + 1]) > 1  # gunicorn with uvicorn workers
    assert argv[argv.index("--host") + 1] == "0.0.0.0"  # noqa: S104 - inside the container
    assert runtime.all("STOPSIGNAL") == ["SIGTERM"]


def test_the_build_context_is_an_allow_list() -> None:
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert {"pyproject.toml", "uv.lock", "app", "auth", "ml", "cli", "data"} <= allowed
    assert not allowed & {".env", "var", "models", ".venv", ".git"}
