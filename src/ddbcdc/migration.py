"""Bring PostgreSQL to the schema this version needs.

Two steps, in one transaction:

1. the Alembic revisions under ``migrations/`` (bookkeeping tables and the shipped
   ``customers`` mapping), run programmatically: no ``alembic.ini`` is needed;
2. every mapping whose tables are missing gets them created from the same Core metadata (so a
   new mapping file needs no Python code and no revision); an existing table whose columns
   differ from its mapping stops the upgrade with the differences listed, since changing a
   table is a reviewed migration's job.

Upgrading to a revision other than head skips step 2; downgrading runs the revisions down and
leaves the tables created in step 2 alone.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

import ddbcdc
from ddbcdc.dberrors import describe
from ddbcdc.errors import ConfigurationError, DatabaseUnavailableError
from ddbcdc.mapping import TableMapping
from ddbcdc.tables import ensure_mapped_tables

__all__ = ["alembic_config", "downgrade", "migrations_dir", "upgrade"]

T = TypeVar("T")


def migrations_dir() -> Path:
    """The ``migrations/`` directory next to the package's source tree."""
    path = Path(ddbcdc.__file__).resolve().parents[2] / "migrations"
    if not (path / "env.py").is_file():
        raise ConfigurationError(f"migrations directory not found at {path}")
    return path


def alembic_config(connection: sa.Connection) -> Config:
    """An Alembic config that runs ``migrations/`` on ``connection``."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["connection"] = connection
    return config


def _in_transaction(engine: sa.Engine, work: Callable[[sa.Connection], T]) -> T:
    try:
        with engine.begin() as conn:
            return work(conn)
    except sa.exc.OperationalError as exc:
        raise DatabaseUnavailableError(f"cannot migrate: {describe(exc)}") from exc


def upgrade(
    engine: sa.Engine, mappings: tuple[TableMapping, ...], *, revision: str = "head"
) -> list[str]:
    """Run the revisions up to ``revision``, then create missing mapped tables (head only).

    Returns:
        The mapped tables created in step 2.
    """

    def work(conn: sa.Connection) -> list[str]:
        command.upgrade(alembic_config(conn), revision)
        return ensure_mapped_tables(conn, mappings) if revision == "head" else []

    return _in_transaction(engine, work)


def downgrade(engine: sa.Engine, *, revision: str = "base") -> None:
    """Run the revisions down to ``revision``."""
    _in_transaction(engine, lambda conn: command.downgrade(alembic_config(conn), revision))
