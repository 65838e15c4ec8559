"""``ddbcdc migrate``: bring PostgreSQL to the schema this version needs.

Two steps, in one transaction:

1. the Alembic revisions under ``migrations/`` (bookkeeping tables and the shipped
   ``customers`` mapping), run programmatically: no ``alembic.ini`` is needed;
2. every mapping in the mappings directory whose tables are missing gets them created from
   the same Core metadata (so a new mapping file needs no Python code and no revision); an
   existing table whose columns differ from its mapping stops the command with the
   differences listed, since changing a table is a reviewed migration's job.

``--revision X`` upgrades to X instead of head (and skips step 2); ``--downgrade X`` (``base``
for everything) runs the revisions down; tables created in step 2 are left alone by it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

import ddbcdc
from ddbcdc.errors import ConfigurationError, DatabaseUnavailableError
from ddbcdc.mapping import TableMapping, load_mappings
from ddbcdc.settings import Settings
from ddbcdc.tables import ensure_mapped_tables

__all__ = ["alembic_config", "downgrade", "migrations_dir", "register", "upgrade"]


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


def _in_transaction(engine: sa.Engine, work: Any) -> Any:
    try:
        with engine.begin() as conn:
            return work(conn)
    except sa.exc.OperationalError as exc:
        raise DatabaseUnavailableError(f"cannot migrate: {exc.orig}") from exc


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

    created: list[str] = _in_transaction(engine, work)
    return created


def downgrade(engine: sa.Engine, *, revision: str = "base") -> None:
    """Run the revisions down to ``revision``."""
    _in_transaction(engine, lambda conn: command.downgrade(alembic_config(conn), revision))


def register(subparsers: Any) -> None:
    """Add the ``migrate`` subcommand."""
    parser = subparsers.add_parser(
        "migrate",
        help="create/upgrade the PostgreSQL schema (Alembic + mapped tables)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--revision", default="head", help="upgrade to this revision")
    group.add_argument("--downgrade", metavar="REVISION", help="downgrade to REVISION (base)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``ddbcdc migrate``."""
    settings = Settings()
    engine = sa.create_engine(settings.require_database_url(), poolclass=sa.pool.NullPool)
    try:
        if args.downgrade:
            downgrade(engine, revision=args.downgrade)
            print(f"downgraded to {args.downgrade}")
            return 0
        mappings = load_mappings(settings.mappings_dir)
        created = upgrade(engine, mappings, revision=args.revision)
        print(f"upgraded to {args.revision}")
        for name in created:
            print(f"created table {name}")
        return 0
    finally:
        engine.dispose()
