"""Alembic environment for ddbcdc.

``target_metadata`` is built from the package's Core tables (:mod:`ddbcdc.schema.tables`): the
bookkeeping tables plus the tables of the shipped mappings in ``schemas/tables`` (installed
with the package: :func:`ddbcdc.resources.shipped_mappings_dir`). Revisions are written and
reviewed by hand; autogenerate only helps draft them.

The connection comes from ``config.attributes["connection"]`` (how ``ddbcdc migrate`` and the
tests call it), else from the ``sqlalchemy.url`` option, else from DATABASE_URL.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from ddbcdc.db import create_engine
from ddbcdc.resources import shipped_mappings_dir
from ddbcdc.schema.mapping import load_mappings
from ddbcdc.schema.tables import metadata_for
from ddbcdc.settings import Settings

config = context.config
target_metadata = metadata_for(load_mappings(shipped_mappings_dir()))


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or Settings().require_database_url()


def run_migrations_offline() -> None:
    """Emit SQL to stdout instead of running it (``alembic upgrade --sql``)."""
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: sa.Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on a live connection."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(_url(), pooled=False)
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
