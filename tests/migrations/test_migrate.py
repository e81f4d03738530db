"""``housing-api migrate`` is the one step that changes a schema: idempotent, safe from
several replicas at once (SQLite and a real PostgreSQL). Other commands create the
schema of an empty database themselves, but in production refuse an outdated one."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Engine, inspect, text

from db.engine import make_engine
from migrations import SchemaError, alembic_config, prepare_schema, schema_revisions
from tests.support.app_server import EXECUTABLE, app_env

FIRST_REVISION = "0001"
PRODUCTION = {
    "APP_ENV": "production",
    "JWT_SECRET_KEY": secrets.token_urlsafe(48),
    "API_KEY_PEPPER": secrets.token_urlsafe(48),
}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'housing.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


def cli(db_url: str, root: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    values = {"VAR_DIR": str(root / "var"), "DATABASE_URL": db_url, **env}
    return subprocess.Popen(
        [str(EXECUTABLE), *args],
        cwd=root,
        env=app_env(values),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=120)
    return process.returncode, out, err


def at_first_revision(engine: Engine) -> None:
    """A database as the previous release left it: migrated to the first revision only."""
    config = alembic_config()
    with engine.connect() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, FIRST_REVISION)
        connection.commit()


def version(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return [
            row[0] for row in connection.execute(text("SELECT version_num FROM alembic_version"))
        ]


def test_migrate_twice_at_once_then_again(db_url: str, engine: Engine, tmp_path: Path) -> None:
    """Two replicas' migration runs start together on an empty database: both succeed, one
    schema results; a third run has nothing to do."""
    runs = [cli(db_url, tmp_path, "migrate", **PRODUCTION) for _ in range(2)]
    results = [finished(run) for run in runs]
    assert [code for code, _, _ in results] == [0, 0], results
    _, head = schema_revisions(engine)
    assert version(engine) == [head]
    assert {"clients", "api_keys", "prediction_log"} <= set(inspect(engine).get_table_names())
    # Each saw the empty database, or the other's finished schema (never half of it).
    allowed = {
        f"schema migrated from empty to {head}",
        f"schema already at {head} (head {head}): nothing to do",
    }
    assert {out.strip() for _, out, _ in results} <= allowed
    code, out, err = finished(cli(db_url, tmp_path, "migrate", **PRODUCTION))
    assert code == 0, err
    assert out.strip() == f"schema already at {head} (head {head}): nothing to do"


def test_migrate_upgrades_an_outdated_schema(db_url: str, engine: Engine, tmp_path: Path) -> None:
    at_first_revision(engine)
    code, out, err = finished(cli(db_url, tmp_path, "migrate", **PRODUCTION))
    assert code == 0, err
    _, head = schema_revisions(engine)
    assert out.strip() == f"schema migrated from {FIRST_REVISION} to {head}"
    assert version(engine) == [head]


@pytest.mark.parametrize(
    "args",
    [("clients", "list"), ("keys", "create", "--owner", "x", "--scopes", "predict"), ("drift",)],
    ids=["clients-list", "keys-create", "drift"],
)
def test_production_commands_refuse_an_outdated_schema(
    db_url: str, engine: Engine, tmp_path: Path, args: tuple[str, ...]
) -> None:
    at_first_revision(engine)
    code, _out, err = finished(cli(db_url, tmp_path, *args, **PRODUCTION))
    assert code == 1
    assert "housing-api migrate" in err
    assert "Traceback" not in err
    assert version(engine) == [FIRST_REVISION]  # nothing was migrated as a side effect


def test_production_serve_refuses_an_outdated_schema(
    engine: Engine, db_url: str, tmp_path: Path, trained_model_dir: Path
) -> None:
    at_first_revision(engine)
    run = cli(
        db_url, tmp_path, "serve", "--port", "1", MODEL_DIR=str(trained_model_dir), **PRODUCTION
    )
    code, _out, err = finished(run)
    assert code == 1
    assert "housing-api migrate" in err
    assert version(engine) == [FIRST_REVISION]


def test_development_commands_still_migrate(db_url: str, engine: Engine, tmp_path: Path) -> None:
    at_first_revision(engine)
    code, _out, err = finished(cli(db_url, tmp_path, "clients", "list"))
    assert code == 0, err
    _, head = schema_revisions(engine)
    assert version(engine) == [head]


def test_a_fresh_install_needs_no_step(db_url: str, engine: Engine, tmp_path: Path) -> None:
    """On an empty database every command, production ones too, creates the schema."""
    code, _out, err = finished(cli(db_url, tmp_path, "clients", "list", **PRODUCTION))
    assert code == 0, err
    _, head = schema_revisions(engine)
    assert version(engine) == [head]


def test_prepare_schema_in_process(engine: Engine) -> None:
    prepare_schema(engine, production=True)  # empty: created
    current, head = schema_revisions(engine)
    assert current == head
    prepare_schema(engine, production=True)  # at head: nothing to do
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'ffff'"))
    for production in (True, False):
        with pytest.raises(SchemaError, match="does not know"):
            prepare_schema(engine, production=production)
