"""``ddbcdc teardown``: remove what ``ddbcdc setup`` made (wiring, table, stream)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ddbcdc.aws import clients as aws
from ddbcdc.aws.provision import ProvisionOptions, tear_down
from ddbcdc.commands.setup import add_target_arguments, options_from, print_step
from ddbcdc.errors import ConfigurationError
from ddbcdc.settings import Settings

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``teardown`` subcommand."""
    parser = subparsers.add_parser(
        "teardown",
        help="delete the source table and the Kinesis stream that setup created",
        description=(
            "Remove the table's Kinesis destination (or the local bridge tag), delete the "
            "source table and delete the Kinesis stream (with DDBCDC_SOURCE=dynamodb-streams: "
            "only the table, whose stream goes with it). Asks first on a terminal; --yes skips "
            "the question (required when not on a terminal). Missing resources are reported."
        ),
    )
    add_target_arguments(parser)
    parser.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    parser.set_defaults(func=run)


def _confirmed(options: ProvisionOptions, where: str) -> bool:
    # What tear_down deletes: the table, and the Kinesis stream only when that is the source.
    stream = (
        f" and Kinesis stream {options.stream!r}"
        if options.source == "kinesis"
        else " (its DynamoDB stream goes with it)"
    )
    question = (
        f"Delete DynamoDB table {options.table!r} (and all its items){stream} at {where}? [y/N] "
    )
    try:
        answer = input(question)
    except EOFError:
        return False
    return answer.strip().lower() in {"y", "yes"}


def run(args: argparse.Namespace) -> int:
    """Tear down after confirmation; 0 when done, 1 when not confirmed, 2 when refused."""
    settings = Settings()
    options = options_from(args, settings)
    where = settings.dynamodb_endpoint or f"AWS {settings.aws_region}"
    if not args.yes:
        if not sys.stdin.isatty():
            raise ConfigurationError(
                "refusing to delete without confirmation: stdin is not a terminal; pass "
                "--yes to delete without asking"
            )
        if not _confirmed(options, where):
            print("ddbcdc teardown: nothing deleted", file=sys.stderr)
            return 1
    steps = tear_down(
        aws.client("dynamodb", settings),
        aws.client("kinesis", settings),
        options,
        on_step=print_step,
    )
    if args.json:
        print(
            json.dumps(
                [{"resource": s.resource, "name": s.name, "action": s.action} for s in steps],
                indent=2,
            )
        )
    return 0
