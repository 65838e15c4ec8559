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
from typing import Any

import sqlalchemy as sa

from ddbcdc.mapping import load_mappings
from ddbcdc.migration import downgrade, upgrade
from ddbcdc.settings import Settings

__all__ = ["register", "run"]


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
