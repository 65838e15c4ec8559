"""``ddbcdc setup``: create the Kinesis stream, the source table and the wiring between them."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ddbcdc.aws import clients as aws
from ddbcdc.aws.provision import DEFAULT_STREAM_NAME, ProvisionOptions, Step, is_local, set_up
from ddbcdc.aws.resources import KEY_SCHEMAS
from ddbcdc.commands import table_name
from ddbcdc.settings import Settings

__all__ = ["add_target_arguments", "options_from", "register", "run"]


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``setup`` and ``teardown`` share: which table, which stream, which mode."""
    parser.add_argument(
        "--table", type=table_name, help="source table (default: settings.source_table)"
    )
    parser.add_argument(
        "--stream",
        help=f"Kinesis stream name (default: settings.stream_name or {DEFAULT_STREAM_NAME})",
    )
    parser.add_argument(
        "--local",
        action="store_true",
        help="wire the local bridge (DynamoDB Stream + tag) instead of the managed Kinesis "
        "destination; implied when the DynamoDB endpoint is on 127.0.0.1/localhost",
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for each resource (300)"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument(
        "--model",
        choices=sorted(KEY_SCHEMAS),
        default="customers",
        help="the table's key: customers (userid N, the default) or single-table (PK S, SK S)",
    )


def options_from(args: argparse.Namespace, settings: Settings) -> ProvisionOptions:
    """ProvisionOptions from the command line, falling back to settings."""
    stream = args.stream or settings.stream_name
    if not stream and settings.stream_arn:
        stream = settings.stream_arn.rsplit("/", 1)[-1]
    return ProvisionOptions(
        table=args.table or settings.source_table,
        key=KEY_SCHEMAS[getattr(args, "model", "customers")],
        stream=stream or DEFAULT_STREAM_NAME,
        shards=getattr(args, "shards", 2),
        local=bool(args.local) or is_local(settings),
        timeout=args.timeout,
        source=settings.source,
        ttl_attribute=getattr(args, "ttl_attribute", None),
    )


def print_step(step: Step) -> None:
    """One progress line on stderr per step."""
    print(f"{step}", file=sys.stderr)


def register(subparsers: Any) -> None:
    """Add the ``setup`` subcommand."""
    parser = subparsers.add_parser(
        "setup",
        help="create the Kinesis stream, the source table and its streaming destination",
        description=(
            "Create the Kinesis stream, the source DynamoDB table (key userid N, or PK S and SK "
            "S with --model single-table; on-demand) and "
            "enable the table's Kinesis streaming destination with microsecond timestamps. "
            "Against the local stack, enable the table's DynamoDB Stream and tag it for the "
            "local bridge instead. With DDBCDC_SOURCE=dynamodb-streams: the table and its own "
            "DynamoDB stream (NEW_AND_OLD_IMAGES), no Kinesis stream. Idempotent: what "
            "already exists is reported and kept."
        ),
    )
    add_target_arguments(parser)
    parser.add_argument(
        "--shards", type=int, default=2, help="shard count of a new stream (default: 2)"
    )
    parser.add_argument(
        "--ttl-attribute",
        metavar="NAME",
        help="enable the table's Time to Live on this attribute (a number, epoch seconds)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Set everything up; print names and ARNs (key=value lines, or JSON)."""
    settings = Settings()
    options = options_from(args, settings)
    result = set_up(
        aws.client("dynamodb", settings),
        aws.client("kinesis", settings),
        options,
        on_step=print_step,
    )
    fields = {
        "source": settings.source,
        "stream_name": result.stream_name,
        "stream_arn": result.stream_arn,
        "table_name": result.table_name,
        "table_arn": result.table_arn,
        "mode": result.mode,
    }
    if args.json:
        steps = [
            {"resource": s.resource, "name": s.name, "action": s.action, "detail": s.detail}
            for s in result.steps
        ]
        print(json.dumps({**fields, "steps": steps}, indent=2))
    else:
        for key, value in fields.items():
            print(f"{key}={value}")
    return 0
