"""``ddbcdc mapping infer``: write a table mapping from a sample of a DynamoDB table.

Reads the key schema (DescribeTable) and up to ``--sample`` items with a parallel Scan, then
writes a mapping JSON (stdout, or ``--output``): key columns, a column per attribute seen in
at least ``--min-share`` of the items with a type for what was seen, everything else left to
the ``extra`` column. ``inferred`` in the file says what was seen (types per attribute and how
often, mixed and rare attributes). Review it, then put it in the mappings directory and run
``ddbcdc migrate``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ddbcdc.aws import clients as aws
from ddbcdc.schema.infer import infer_mapping, sample_items
from ddbcdc.settings import Settings

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``mapping`` subcommand with ``infer``."""
    parser = subparsers.add_parser(
        "mapping",
        help="infer a table mapping from a sample of a DynamoDB table",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    infer = actions.add_parser("infer", help="sample a table and write a mapping JSON")
    infer.add_argument("--table", help="DynamoDB table (default: settings.source_table)")
    infer.add_argument("--sample", type=int, default=10_000, help="items to read (10000)")
    infer.add_argument("--segments", type=int, default=4, help="parallel Scan segments (4)")
    infer.add_argument("--target", help="PostgreSQL table name (default: from the table name)")
    infer.add_argument(
        "--min-share",
        type=float,
        default=0.01,
        help="attributes in fewer of the items go to the extra column (0.01)",
    )
    infer.add_argument("--extra-column", default="attributes", help="the jsonb column for the rest")
    infer.add_argument("--change-log", action="store_true", help="keep a change log too")
    infer.add_argument("--output", type=Path, help="write here instead of stdout")
    infer.set_defaults(func=run_infer)


def _report(document: dict[str, Any]) -> str:
    inferred = document["inferred"]
    lines = [
        f"sampled {inferred['sampled_items']} items of {document['source_table']}: "
        f"{len(document['columns'])} columns"
    ]
    for name in inferred["mixed_types"]:
        seen = inferred["attributes"][name]
        types = ", ".join(f"{t} {n}" for t, n in seen["types"].items())
        lines.append(f"  mixed types: {name} ({types})")
    rare = inferred["left_to_extra"]
    if rare:
        lines.append(f"  left to {document['extra']['column']}: {', '.join(rare)}")
    return "\n".join(lines)


def run_infer(args: argparse.Namespace) -> int:
    """Run ``ddbcdc mapping infer``."""
    settings = Settings()
    table = args.table or settings.source_table
    dynamodb = aws.client("dynamodb", settings)
    description = dynamodb.describe_table(TableName=table)["Table"]
    items = sample_items(dynamodb, table, sample=max(1, args.sample), segments=args.segments)
    document = infer_mapping(
        description,
        items,
        target_table=args.target,
        extra_column=args.extra_column,
        min_share=args.min_share,
        change_log=args.change_log,
    )
    text = json.dumps(document, indent=2) + "\n"
    if args.output is not None:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    print(_report(document), file=sys.stderr)
    return 0
