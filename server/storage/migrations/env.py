"""Alembic environment. The store passes its open transaction as
``config.attributes["connection"]`` (migrations run inside it, under the store's lock); run by
hand, the URL comes from ``BOLTZGEN_DATABASE_URL`` (or ``sqlalchemy.url`` in alembic.ini)."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

from server.storage.tables import metadata


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # ALTER TABLE via copy on SQLite
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = os.environ.get("BOLTZGEN_DATABASE_URL") or context.config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise SystemExit("set BOLTZGEN_DATABASE_URL to the store's SQLAlchemy URL")
    engine = create_engine(url)
    with engine.connect() as conn:
        _run(conn)
        conn.commit()
    engine.dispose()
