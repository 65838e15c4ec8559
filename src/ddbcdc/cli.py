"""The ``ddbcdc`` command line: a thin dispatcher over ``ddbcdc.commands``.

Only the chosen subcommand's module is imported. ``ddbcdc --help`` (and an unknown or missing
command) imports none: it lists the commands from :data:`COMMANDS`, whose one-line summaries
a test holds equal to the ones the modules register.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from ddbcdc import __version__
from ddbcdc.errors import DdbcdcError

__all__ = ["main"]

# Order here is the order in --help; each command's one-line summary.
COMMANDS: dict[str, str] = {
    "demo": "run the whole pipeline on the local stack and check PostgreSQL against DynamoDB",
    "local": "run the local AWS stack (moto, PostgreSQL, kinesis-local and bridge, or the "
    "DynamoDB Streams front)",
    "migrate": "create/upgrade the PostgreSQL schema (Alembic + mapped tables, backfills)",
    "mapping": "infer a table mapping from a sample of a DynamoDB table",
    "setup": "create the Kinesis stream, the source table and its streaming destination",
    "worker": "consume the Kinesis stream into PostgreSQL (KCL worker)",
    "load": "write random customers and changes to them into the source table",
    "snapshot": "copy the items a table already holds into PostgreSQL (scan or export)",
    "export": "export the table to S3 (point in time), wait, import it into PostgreSQL",
    "verify": "compare the table with PostgreSQL key by key (--repair fixes differences)",
    "status": "per-shard progress and lag of the worker, and backfills, from PostgreSQL",
    "apply": "apply change records (any input form: JSON Lines, arrays, events, exports)",
    "decode": "decode change records (any input form) to lossless JSON lines",
    "dlq": "list, replay or discard dead-lettered records",
    "iam-policy": "print the least-privilege IAM policy of the worker, setup or snapshot role",
    "teardown": "delete the source table and the Kinesis stream that setup created",
}


def _chosen_command(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv``, if it is a known one (``--log-level X`` skipped)."""
    args = iter(argv)
    for arg in args:
        if arg == "--log-level":
            next(args, None)
        elif not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser.

    When ``argv`` names a command, only that command's module is imported and registers its
    full parser; otherwise (``--help``, no or an unknown command) every command is listed
    with its summary and no command module is imported.
    """
    parser = argparse.ArgumentParser(
        prog="ddbcdc",
        description="DynamoDB change data capture into a live PostgreSQL copy.",
    )
    parser.add_argument("--version", action="version", version=f"ddbcdc {__version__}")
    parser.add_argument(
        "--log-level", default="WARNING", help="stderr log level (default: WARNING)"
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = _chosen_command(argv) if argv is not None else None
    if chosen:
        module = importlib.import_module(f"ddbcdc.commands.{chosen.replace('-', '_')}")
        module.register(subparsers)
    else:
        for name, summary in COMMANDS.items():
            subparsers.add_parser(name, help=summary)
    return parser


def configure_logging(level: str) -> None:
    """Structured-enough logs on stderr; stdout stays for command output."""
    logging.basicConfig(
        stream=sys.stderr,
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ddbcdc`` console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    configure_logging(args.log_level)
    try:
        return int(args.func(args))
    except DdbcdcError as exc:
        print(f"ddbcdc {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
