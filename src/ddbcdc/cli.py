"""The ``ddbcdc`` command line: a thin dispatcher over ``ddbcdc.commands``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from ddbcdc import __version__
from ddbcdc.errors import DdbcdcError

__all__ = ["main"]

# Order here is the order in --help.
COMMANDS: tuple[str, ...] = (
    "demo",
    "local",
    "migrate",
    "setup",
    "worker",
    "load",
    "snapshot",
    "export",
    "verify",
    "status",
    "apply",
    "decode",
    "dlq",
    "teardown",
)


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
    """The argument parser: only the chosen subcommand's module is imported when ``argv``
    names one (start-up stays fast), every subcommand otherwise (``--help``, errors)."""
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
    for name in (chosen,) if chosen else COMMANDS:
        importlib.import_module(f"ddbcdc.commands.{name}").register(subparsers)
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
