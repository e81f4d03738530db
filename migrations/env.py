"""Alembic environment: run on the connection ``migrations.upgrade_schema`` hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from auth.models import Base
from db.engine import make_engine
from monitoring.models import PredictionLogBase

config = context.config
# Every table of the database: the credential store's and the prediction log's.
target_metadata = [Base.metadata, PredictionLogBase.metadata]


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER much
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("call migrations.upgrade_schema(engine); there is no alembic.ini")
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("offline (--sql) migrations are not supported")
run_migrations_online()
