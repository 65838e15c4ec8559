"""``ddbcdc mapping infer``: write a table mapping from a sample of a DynamoDB table.

Reads the key schema (DescribeTable) and up to ``--sample`` items with a parallel Scan, then
writes a mapping JSON (stdout, or ``--output``): key columns, a column per attribute seen in
at least ``--min-share`` of the items with a type for what was seen, everything else left to
the ``extra`` column. ``inferred`` in the file says what was seen (types per attribute and how
often, mixed and rare attributes). A single-table design (``--design``; by default when the
sample looks like one) gets a routed mapping instead: a route per entity its keys and entity
attribute tell apart, with its key templates and columns, and the report says how many of the
sample items each route takes. Review it, then put it in the mappings directory and run
``ddbcdc migrate``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from ddbcdc.aws import clients as aws
from ddbcdc.commands import count, scan_segments, table_name
from ddbcdc.schema.infer import infer_mapping, sample_items
from ddbcdc.schema.infer_routes import infer_routes, single_table_design
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
    infer.add_argument(
        "--table", type=table_name, help="DynamoDB table (default: settings.source_table)"
    )
    infer.add_argument("--sample", type=count, default=10_000, help="items to read (10000)")
    infer.add_argument(
        "--segments", type=scan_segments, default=4, help="parallel Scan segments (4)"
    )
    infer.add_argument("--target", help="PostgreSQL table name (default: from the table name)")
    infer.add_argument(
        "--min-share",
        type=float,
        default=0.01,
        help="attributes in fewer of the items go to the extra column (0.01)",
    )
    infer.add_argument("--extra-column", default="attributes", help="the jsonb column for the rest")
    infer.add_argument("--change-log", action="store_true", help="keep a change log too")
    infer.add_argument(
        "--design",
        choices=("auto", "plain", "single-table"),
        default="auto",
        help="plain: one table; single-table: a route (table) per entity the keys and entity "
        "attribute tell apart; auto (default): single-table when the sample looks like one",
    )
    infer.add_argument("--output", type=Path, help="write here instead of stdout")
    infer.set_defaults(func=run_infer)


def _routes_report(document: dict[str, Any], items: list[dict[str, Any]]) -> str:
    """The proposal's routes, and how many of the sample items each takes."""
    from ddbcdc.backfill.records import RecordMaker
    from ddbcdc.cleanse.routes import RoutedCleanser
    from ddbcdc.decode.record import decode_record
    from ddbcdc.errors import PoisonRecordError
    from ddbcdc.schema.mapping import parse_mapping

    mapping = parse_mapping(document, name=document["name"])
    cleanser = RoutedCleanser(mapping)
    maker = RecordMaker(mapping, [c.source for c in mapping.key_columns])
    taken: Counter[str] = Counter()
    for item in items:
        record = decode_record(maker.put(item, version_us=0, event_id="infer").data)
        try:
            taken[cleanser.cleanse(record).route or "-"] += 1
        except PoisonRecordError:
            taken["dead letter"] += 1
    inferred = document["inferred"]
    lines = [
        f"sampled {inferred['sampled_items']} items of {document['source_table']}: a single-table "
        f"design (separator {inferred['separator']!r}, entity attribute "
        f"{inferred['entity_attribute'] or 'none'}), {len(document['routes'])} routes"
    ]
    for route in document["routes"]:
        match = ", ".join(f"{k}={v}" for k, v in route["match"].items())
        target = route["target_table"]
        lines.append(f"  {target}: {taken.pop(target, 0)} sample items ({match})")
    for target, taken_count in sorted(taken.items()):
        lines.append(f"  {target}: {taken_count} sample items")
    return "\n".join(lines)


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
    routed = args.design == "single-table" or (
        args.design == "auto" and single_table_design(description, items)
    )
    if routed:
        document = infer_routes(
            description,
            items,
            name=args.target,
            extra_column=args.extra_column,
            min_share=args.min_share,
            change_log=args.change_log,
        )
    else:
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
    report = _routes_report(document, items) if routed else _report(document)
    print(report, file=sys.stderr)
    return 0
