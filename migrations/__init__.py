"""The schema history of the service's database, above both stores.

``auth.models`` (credentials) and ``monitoring.models`` (the prediction log) each own
their tables; these migrations bring one database holding both from empty to head.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
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
