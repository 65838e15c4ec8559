"""``ddbcdc load``: drive the source table with random customers and changes to them (or, with
``--model single-table``, customers, orders and order lines in one table)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ddbcdc.aws import clients as aws
from ddbcdc.commands import table_name
from ddbcdc.errors import ConfigurationError
from ddbcdc.load.plan import (
    DEFAULT_MIX,
    MODELS,
    LoadOptions,
    OpKind,
    format_mix,
    parse_mix,
    plan_operations,
)
from ddbcdc.load.shop import shop_key_index
from ddbcdc.load.writer import LoadSummary, run_load, scan_items
from ddbcdc.progressbar import ProgressBar
from ddbcdc.settings import Settings

__all__ = ["format_summary", "register", "run"]


def _mix(text: str) -> dict[OpKind, int]:
    try:
        return parse_mix(text)
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def register(subparsers: Any) -> None:
    """Add the ``load`` subcommand."""
    parser = subparsers.add_parser(
        "load",
        help="write random customers and changes to them into the source table",
        description=(
            "Insert, modify and remove random customers (userid N, first_name S, last_name S, "
            "phone N) in the source table, paced and reproducible. insert puts an absent key "
            "(a modify when the key space is full); modify changes 1-3 attributes of a present "
            "key and remove deletes one (both an insert when the table is empty). The plan "
            "assumes an empty table unless --scan-first reads the existing keys."
        ),
    )
    parser.add_argument(
        "--table", type=table_name, help="table to write (default: settings.source_table)"
    )
    parser.add_argument("--count", type=int, default=1000, help="total writes (default: 1000)")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="writes per second, steady; 0 = flat out (0)"
    )
    parser.add_argument("--keys", type=int, default=1000, help="key space size (default: 1000)")
    parser.add_argument(
        "--mix",
        type=_mix,
        default=dict(DEFAULT_MIX),
        help=f"operation weights (default: {format_mix(DEFAULT_MIX)})",
    )
    parser.add_argument("--seed", type=int, help="random seed for a reproducible run")
    parser.add_argument(
        "--scan-first", action="store_true", help="read the table's existing items before planning"
    )
    parser.add_argument("--workers", type=int, default=4, help="writer threads (default: 4)")
    parser.add_argument(
        "--batch-size", type=int, default=25, help="writes per BatchWriteItem, 1-25 (25)"
    )
    parser.add_argument(
        "--update-items",
        action="store_true",
        help="send modifies as UpdateItem (one call each) instead of batched PutItem",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when stderr is a terminal)",
    )
    parser.add_argument(
        "--new-attribute",
        metavar="NAME",
        help="also write this attribute (S, a city) on inserts and some modifies",
    )
    parser.add_argument(
        "--model",
        choices=MODELS,
        default="customers",
        help="customers (the default), or single-table: --keys customers with their orders "
        "and order lines in one table (PK, SK), with delete-then-reinsert and entity changes "
        "(a cart becoming an order); the table of ddbcdc setup --model single-table",
    )
    parser.add_argument(
        "--ttl-attribute",
        metavar="NAME",
        help="also write this attribute on inserts and modifies: the write's time plus "
        "--ttl-seconds, in epoch seconds (for a table with Time to Live on NAME)",
    )
    parser.add_argument(
        "--ttl-seconds",
        type=float,
        metavar="N",
        help="how long after its last write an item expires (with --ttl-attribute)",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(func=run)


def format_summary(summary: LoadSummary) -> str:
    """The human summary printed at the end of a run."""
    writes = ", ".join(f"{kind} {n}" for kind, n in summary.writes.items())
    lines = [
        f"table {summary.table}: {summary.total_writes} of {summary.planned} writes ({writes})",
        f"elapsed {summary.elapsed_s:.2f}s, {summary.rate:,.0f} writes/s, "
        f"{summary.batches} batches",
        f"retries {summary.retries}, throttles {summary.throttles}, "
        f"unprocessed items resent {summary.unprocessed}, errors {summary.errors}",
        f"seed {summary.seed} (repeat with --seed {summary.seed})",
    ]
    if summary.error_codes:
        lines.append(
            "error codes: " + ", ".join(f"{c} {n}" for c, n in summary.error_codes.items())
        )
    return "\n".join(lines)


def _options(args: argparse.Namespace, settings: Settings) -> LoadOptions:
    extra: dict[str, Any] = {} if args.seed is None else {"seed": args.seed}
    return LoadOptions(
        table=args.table or settings.source_table,
        count=args.count,
        keys=args.keys,
        mix=args.mix,
        rate=args.rate,
        workers=args.workers,
        batch_size=args.batch_size,
        modify_with_update=args.update_items,
        new_attribute=args.new_attribute,
        model=args.model,
        ttl_attribute=args.ttl_attribute,
        ttl_seconds=args.ttl_seconds,
        **extra,
    )


def run(args: argparse.Namespace) -> int:
    """Plan and write; 0 when every write succeeded, 1 when some failed."""
    settings = Settings()
    options = _options(args, settings)
    client = aws.client("dynamodb", settings, max_attempts=1)
    show = sys.stderr.isatty() if args.progress is None else args.progress
    # Outside the writers' retries: a missing table or a wrong endpoint ends the run at once.
    client.describe_table(TableName=options.table)
    existing = None
    if args.scan_first:
        known = shop_key_index(options.keys) if options.model == "single-table" else None
        key_of = None if known is None else (lambda item: known.get((item["PK"], item["SK"])))
        existing = scan_items(client, options.table, key_of)
    operations = plan_operations(options, existing=existing)
    bar = ProgressBar(options.count, label="load") if show else None
    try:
        summary = run_load(
            client, options, operations=operations, on_progress=bar.update if bar else None
        )
    finally:
        if bar is not None:
            bar.close()
    print(json.dumps(summary.to_dict()) if args.json else format_summary(summary))
    return 0 if summary.errors == 0 else 1
