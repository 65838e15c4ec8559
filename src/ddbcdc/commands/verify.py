"""``ddbcdc verify [--repair]``: compare the table with PostgreSQL, key by key.

Scans the table (parallel segments, consistent reads, the same read-rate cap as ``ddbcdc
snapshot``) and compares each page with PostgreSQL, in bounded memory whatever the table's
size. Keys that differ are re-read with a consistent BatchGetItem and compared again once the
worker has passed that read: items that changed during the run are not drift. Reports missing,
extra and different items (counts, a few sample keys; values with ``--show-values``).
``--repair`` writes each confirmed difference through the versioned path.

Exit status: 0 no drift, 1 drift found (repaired or not), 2 error.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from ddbcdc.aws import clients as aws
from ddbcdc.aws.streams import open_stream
from ddbcdc.backfill.feed import backfill_pipeline, mapping_for, margin_us
from ddbcdc.backfill.position import WorkerWatch
from ddbcdc.commands import amount, seconds
from ddbcdc.commands.snapshot import DEFAULT_SEGMENTS, add_rate_options
from ddbcdc.db import create_engine
from ddbcdc.errors import ConfigurationError
from ddbcdc.migrate.versions import check_engine
from ddbcdc.progressbar import ProgressBar
from ddbcdc.settings import Settings
from ddbcdc.verify.drift import VerifyOptions
from ddbcdc.verify.recheck import Repairer
from ddbcdc.verify.run import verify_table

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``verify`` subcommand."""
    parser = subparsers.add_parser(
        "verify",
        help="compare the table with PostgreSQL key by key (--repair fixes differences)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_rate_options(parser)
    parser.add_argument("--repair", action="store_true", help="fix confirmed differences")
    parser.add_argument("--show-values", action="store_true", help="show the sampled rows")
    parser.add_argument("--samples", type=amount, default=5, help="sample keys per kind (5)")
    parser.add_argument(
        "--settle-timeout",
        type=seconds,
        default=120.0,
        help="seconds to wait for the worker to pass a re-read (120)",
    )
    parser.add_argument(
        "--max-suspects", type=amount, default=100_000, help="keys re-checked at most (100000)"
    )
    parser.set_defaults(func=run)


def _options(args: argparse.Namespace) -> VerifyOptions:
    return VerifyOptions(
        segments=args.segments or DEFAULT_SEGMENTS,
        parallel=args.parallel,
        max_rcu=args.max_rcu,
        max_items_per_second=args.max_items_per_second,
        page_size=args.page_size,
        samples=args.samples,
        settle_timeout=args.settle_timeout,
        max_suspects=args.max_suspects,
    )


def _watch(settings: Settings, engine: sa.Engine) -> WorkerWatch:
    return WorkerWatch(
        engine=engine,
        stream=open_stream(settings),
        application=settings.application_name,
        margin_us=margin_us(settings),
        timestamp_unit=settings.timestamp_unit,
    )


def run(args: argparse.Namespace) -> int:
    """Run ``ddbcdc verify``."""
    settings = Settings()
    mapping = mapping_for(settings, args.table or settings.source_table)
    options = _options(args)
    if args.repair and settings.source == "dynamodb-streams" and margin_us(settings) <= 1_000_000:
        raise ConfigurationError(
            "DDBCDC_CLOCK_SKEW_MARGIN must exceed 1s with DynamoDB Streams, whose timestamps are "
            "whole seconds: a repair at G - m could otherwise beat a change made after G"
        )
    engine = create_engine(settings.require_database_url())
    pipeline = (
        backfill_pipeline(settings, mapping, connections=1, sweep=True) if args.repair else None
    )
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    try:
        # Items are compared as the rows the worker writes, which only the mapping the
        # table was migrated to says: with another, a correct copy would look like drift.
        check_engine(engine, [mapping])
        report = verify_table(
            mapping,
            client=aws.client("dynamodb", settings, max_attempts=3),
            engine=engine,
            watch=_watch(settings, engine),
            options=options,
            repairer=Repairer(pipeline, run_id) if pipeline is not None else None,
            progress=None if args.no_progress else ProgressBar(None, label="verify"),
        )
    finally:
        engine.dispose()
        if pipeline is not None:
            pipeline.close()
    if args.json:
        print(json.dumps(report.to_dict(values=args.show_values)))
    else:
        print(report.text(values=args.show_values))
    return 1 if report.drift else 0
