"""``ddbcdc demo``: the whole pipeline on the local stack, checked end to end."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

from ddbcdc.errors import ConfigurationError

_NEXT_STEPS = """
Next:
  ddbcdc local up && eval "$(ddbcdc local env)"   keep a local stack running
  ddbcdc migrate && ddbcdc setup && ddbcdc worker  then, in another shell: ddbcdc load --count 5000
  psql "${DATABASE_URL/+psycopg/}" -c 'select * from customers limit 10'
  Real AWS: unset the DDBCDC_*_ENDPOINT variables, set AWS_REGION, AWS_KINESIS_STREAM (or AWS_ARN)
  and DATABASE_URL, then run ddbcdc migrate, ddbcdc setup and ddbcdc worker.
  The table's own DynamoDB stream instead of Kinesis: DDBCDC_SOURCE=dynamodb-streams
  (locally: ddbcdc local up --source dynamodb-streams; ddbcdc demo --source dynamodb-streams).
"""


def register(subparsers: Any) -> None:
    """Add the ``demo`` subcommand."""
    parser = subparsers.add_parser(
        "demo",
        help="run the whole pipeline on the local stack and check PostgreSQL against DynamoDB",
        description=(
            "Start the local stack, migrate, set up, start the KCL worker, load changes into "
            "DynamoDB, wait until PostgreSQL equals a Scan of the table, report; then a "
            "single-table design (customers, orders, order lines in one table) into a "
            "PostgreSQL table per entity; then the mapping gains a column. Clean up. Exits 0 "
            "only when every comparison matches."
        ),
    )
    parser.add_argument("--changes", type=int, default=3000, help="writes to load (3000)")
    parser.add_argument("--keys", type=int, default=500, help="key space (500)")
    parser.add_argument("--shards", type=int, default=2, help="stream shards (2)")
    parser.add_argument(
        "--source",
        choices=["kinesis", "dynamodb-streams"],
        default="kinesis",
        help="what the worker reads: a Kinesis stream (the default) or the table's DynamoDB "
        "stream (through the DynamoDB Streams Kinesis Adapter)",
    )
    parser.add_argument("--rate", type=float, default=0.0, help="writes/s, 0 = as fast as possible")
    parser.add_argument("--seed", type=int, default=7, help="loader seed (7)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait (120)")
    parser.add_argument(
        "--database-url", help="use this PostgreSQL instead of a throwaway local cluster"
    )
    parser.add_argument("--log-dir", type=Path, default=Path(".local/demo"), help="process logs")
    parser.add_argument(
        "--single-table-changes",
        type=int,
        default=1000,
        help="writes of the single-table act (customers, orders, order lines in one table, a "
        "PostgreSQL table each); 0 skips it (1000)",
    )
    parser.set_defaults(func=run)


def _check_prerequisites(source: str) -> None:
    missing = [
        hint
        for tool, hint in (
            ("java", "Java 17+ (Debian: apt-get install openjdk-17-jre-headless)"),
            ("node", "Node.js 18+ and npm (Debian: apt-get install nodejs npm)"),
        )
        if shutil.which(tool) is None and (tool == "java" or source == "kinesis")
    ]
    if missing:
        raise ConfigurationError("the demo needs " + "; ".join(missing))


def run(args: argparse.Namespace) -> int:
    """Run the demo and print what to do next."""
    from ddbcdc.demo.run import DemoOptions, run_demo
    from ddbcdc.local.kinesis_package import find_kinesis_local

    _check_prerequisites(args.source)
    if args.source == "kinesis":
        find_kinesis_local()  # found, or installed now (with a message) rather than mid-start-up
    status = run_demo(
        DemoOptions(
            changes=args.changes,
            keys=args.keys,
            shards=args.shards,
            rate=args.rate,
            seed=args.seed,
            timeout=args.timeout,
            database_url=args.database_url,
            log_dir=args.log_dir,
            single_table_changes=args.single_table_changes,
            source=args.source,
        )
    )
    print(_NEXT_STEPS, file=sys.stdout)
    return status
