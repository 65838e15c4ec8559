"""``ddbcdc migrate``: bring PostgreSQL to the schema this version and the mappings need.

In one transaction: the Alembic revisions under ``migrations/``; then every mapping in the
mappings directory is compared with its tables and the plan is run: missing tables created,
new columns added, a changed required flag applied; a column dropped or retyped, or a change
log dropped, is refused with the exact DDL it would run unless ``--allow-destructive``; the
mapping each table is now at is recorded (writers with another mapping refuse to start).

Then new columns are filled from the attributes the rows kept (``"extra"`` in the mapping),
through the column's own rules; values that do not fit, and rows PostgreSQL refuses to update
(a trigger, a constraint), become dead letters (``ddbcdc dlq list --summary``). The fill goes
in batches, each committed with its progress: run the command again to resume one that was
interrupted, or that stopped on a lock it could not get (exit 2, the lock named).

``--dry-run`` prints the plan (every statement) and changes nothing. ``--revision X``
upgrades to X instead of head (and skips the mappings); ``--downgrade X`` (``base`` for
everything) runs the revisions down; tables created for mappings are left alone by it, and
so are the tombstone prune floors once one was raised (they guard those tables).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import sqlalchemy as sa

from ddbcdc.db import create_engine, describe
from ddbcdc.errors import DatabaseUnavailableError
from ddbcdc.migrate.fill import BackfillReport
from ddbcdc.migrate.run import downgrade, format_plan, migrate
from ddbcdc.schema.mapping import load_mappings
from ddbcdc.settings import Settings

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``migrate`` subcommand."""
    parser = subparsers.add_parser(
        "migrate",
        help="create/upgrade the PostgreSQL schema (Alembic + mapped tables, backfills)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--revision", default="head", help="upgrade to this revision")
    group.add_argument("--downgrade", metavar="REVISION", help="downgrade to REVISION (base)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    parser.add_argument(
        "--allow-destructive",
        action="store_true",
        help="run steps that lose data (drop or retype a column, drop a change log)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=1000, help="rows per backfill transaction (1000)"
    )
    parser.set_defaults(func=run)


def _progress(report: BackfillReport) -> None:
    print(
        f"  backfill {report.table}: {report.rows} rows, {report.filled} filled, "
        f"{report.dead_lettered} dead letters",
        file=sys.stderr,
    )


def run(args: argparse.Namespace) -> int:
    """Run ``ddbcdc migrate``: 0 when done, 1 when something is left to settle.

    A PostgreSQL fault ends it with one line naming it (exit 2, through
    :class:`~ddbcdc.errors.DatabaseUnavailableError`); a backfill it stopped resumes at the
    next run.
    """
    settings = Settings()
    engine = create_engine(settings.require_database_url(), pooled=False)
    try:
        if args.downgrade:
            downgrade(engine, revision=args.downgrade)
            print(f"downgraded to {args.downgrade}")
            return 0
        mappings = load_mappings(settings.mappings_dir) if args.revision == "head" else ()
        result = migrate(
            engine,
            mappings,
            revision=args.revision,
            allow_destructive=args.allow_destructive,
            dry_run=args.dry_run,
            batch_size=max(1, args.batch_size),
            on_batch=_progress,
        )
    except sa.exc.SQLAlchemyError as exc:  # a fault the steps did not name themselves
        raise DatabaseUnavailableError(f"cannot migrate: {describe(exc)}") from exc
    finally:
        engine.dispose()
    print(format_plan(result))
    if result.dry_run:
        print("dry run: nothing was changed")
        return 0
    print(f"upgraded to {args.revision}")
    for name in result.created:
        print(f"created table {name}")
    for report in result.backfills:
        state = "done" if report.finished else "not finished: run ddbcdc migrate again"
        print(
            f"backfilled {report.table} ({', '.join(report.columns)}): {report.rows} rows, "
            f"{report.filled} filled, {report.dead_lettered} dead letters; {state}"
        )
    for problem in result.problems:
        print(f"not finished: {problem}")
    return 1 if result.problems else 0
