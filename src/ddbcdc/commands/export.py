"""``ddbcdc export``: export the table to S3 at a point in time, wait, and import it.

Requests ExportTableToPointInTime (DYNAMODB_JSON; point-in-time recovery must be on), waits
until it is COMPLETED, then imports it like ``ddbcdc snapshot --from-export`` (checked,
resumable: run ``ddbcdc snapshot --from-export <folder>`` to continue an interrupted import).
For tables too large to scan.

Exit status: 0 done, 1 done with dead-lettered items, 2 refused or failed.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ddbcdc.aws import clients as aws
from ddbcdc.backfill.exporter import ExportRequest, request_export, wait_for_export
from ddbcdc.backfill.feed import mapping_for
from ddbcdc.backfill.importer import DEFAULT_BATCH_SIZE
from ddbcdc.backfill.records import format_us
from ddbcdc.commands import table_name
from ddbcdc.commands.snapshot import import_location, time_arg
from ddbcdc.db import check_reachable
from ddbcdc.errors import ConfigurationError
from ddbcdc.settings import Settings

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``export`` subcommand."""
    parser = subparsers.add_parser(
        "export",
        help="export the table to S3 (point in time), wait, import it into PostgreSQL",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--table", type=table_name, help="DynamoDB table (default: DDBCDC_SOURCE_TABLE)"
    )
    parser.add_argument("--bucket", required=True, help="S3 bucket the export is written to")
    parser.add_argument("--prefix", default="ddbcdc-exports", help="S3 prefix (ddbcdc-exports)")
    parser.add_argument("--export-time", help="point in time to export (default: now)")
    parser.add_argument("--incremental-from", help="incremental export of changes since ...")
    parser.add_argument("--incremental-to", help="... until (default: now)")
    parser.add_argument(
        "--timeout", type=float, default=6 * 3600, help="seconds to wait for the export (6 h)"
    )
    parser.add_argument("--poll", type=float, default=10.0, help="seconds between checks (10)")
    parser.add_argument("--force", action="store_true", help="go ahead despite failed checks")
    parser.add_argument("--restart", action="store_true", help="abandon an unfinished backfill")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help=f"export lines per transaction ({DEFAULT_BATCH_SIZE})",
    )
    parser.add_argument("--parallel", type=int, help="data files imported at once (1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``ddbcdc export``."""
    from ddbcdc.runtime import tune_gc

    settings = Settings()
    tune_gc()
    table = args.table or settings.source_table
    mapping = mapping_for(settings, table)
    incremental_from = time_arg("--incremental-from", args.incremental_from)
    if args.incremental_to and incremental_from is None:
        raise ConfigurationError("--incremental-to goes with --incremental-from")
    request = ExportRequest(
        table=table,
        bucket=args.bucket,
        prefix=args.prefix,
        export_time_us=time_arg("--export-time", args.export_time),
        incremental_from_us=incremental_from,
        incremental_to_us=time_arg("--incremental-to", args.incremental_to),
    )
    # Before an export that costs money: PostgreSQL answers, the bucket exists and can be read.
    check_reachable(settings.require_database_url())
    dynamodb = aws.client("dynamodb", settings)
    s3 = aws.client("s3", settings)
    s3.list_objects_v2(Bucket=request.bucket, Prefix=f"{request.prefix.strip('/')}/", MaxKeys=1)
    export = request_export(dynamodb, request)
    print(f"export {export.arn} requested, waiting", file=sys.stderr)
    folder, export_us = wait_for_export(dynamodb, s3, export, timeout=args.timeout, poll=args.poll)
    print(f"export done: {folder} (as of {format_us(export_us)})", file=sys.stderr)
    return import_location(settings, args, mapping, folder, export_us)
