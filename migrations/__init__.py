"""The schema history of the service's database, above both stores.

``auth.models`` (credentials) and ``monitoring.models`` (the prediction log) each own
their tables; these migrations bring one database holding both from empty to head.

Migrating is an explicit step, ``housing-api migrate`` (:func:`upgrade_schema`): run it
once per release, before the new code starts (the Kubernetes Job, compose's ``migrate``
service). Everything else opens the database through :func:`prepare_schema`: an empty
database gets the whole schema at once (a fresh install needs no extra step); one at
head is used as it is; one whose schema is older than the code is migrated in
development, and refused in production with a message naming ``housing-api migrate``,
so that no replica or CLI command changes a shared schema as a side effect.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

MIGRATIONS_DIR = Path(__file__).resolve().parent
# Any constant: serialises concurrent upgrade_schema() calls on one PostgreSQL database.
_PG_MIGRATION_LOCK_ID = 0x686F7573  # "hous"


def alembic_config() -> Config:
    """Alembic configured in code: works from any directory and from an installed wheel."""
    config = Config()
    # ConfigParser interpolation: a literal % in the path must be doubled.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    return config


def upgrade_schema(engine: Engine) -> None:
    """Create or migrate the schema to the newest revision; safe to call on every start.

    Concurrent callers (several workers starting at once) are serialised: an advisory
    lock on PostgreSQL, an immediate write transaction on SQLite. The second one finds
    the schema at head and does nothing.
    """
    config = alembic_config()
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as connection:
        if sqlite:
            # SQLite changes a table by copying it into a new one and dropping the old;
            # with foreign keys enforced, that drop would run ON DELETE actions on rows
            # that still point at it. Off for the migration (outside any transaction, or
            # SQLite ignores it), checked before the commit, on again after.
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        try:
            if sqlite:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            elif engine.dialect.name == "postgresql":
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK_ID})")
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            if sqlite:
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                if broken:
                    raise RuntimeError(f"the migration left broken references: {broken[:5]}")
            connection.commit()
        finally:
            if sqlite:
                connection.rollback()
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")


class SchemaError(RuntimeError):
    """The database's schema does not match this code, and this process may not fix it."""


def schema_revisions(engine: Engine) -> tuple[str | None, str]:
    """``(the database's revision or None when it has none, the code's head)``."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the history is shipped with the code
        raise SchemaError("no migrations found")
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    return current, head


def prepare_schema(engine: Engine, *, production: bool) -> None:
    """Bring the schema where the code needs it, or refuse (see the module's docstring).

    Raises :class:`SchemaError` in production when the schema is older than the code,
    and everywhere when it is at a revision this code does not know (newer code ran
    ``migrate`` and this older code was started again).
    """
    current, head = schema_revisions(engine)
    if current == head:
        return
    if current is not None:
        known = {
            script.revision
            for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()
        }
        if current not in known:
            raise SchemaError(
                f"the database schema is at revision {current}, which this version of the "
                f"code does not know (its newest is {head}); run the matching release"
            )
        if production:
            raise SchemaError(
                f"the database schema is at revision {current}, older than this code's "
                f"{head}: run `housing-api migrate` once (the release's migration Job or "
                "compose's `migrate` service) before starting this version"
            )
    # Empty (a fresh install), or development: create or migrate, serialised.
    upgrade_schema(engine)


def schema_preparer(production: bool) -> Callable[[Engine], None]:
    """:func:`prepare_schema` for ``auth.wiring.open_store(settings, prepare)``."""
    return partial(prepare_schema, production=production)
