"""The ``ddbcdc`` command line: a thin dispatcher over ``ddbcdc.commands``.

Only the chosen subcommand's module is imported. ``ddbcdc --help`` (and an unknown or missing
command) imports none: it lists the commands from :data:`COMMANDS`, whose one-line summaries
a test holds equal to the ones the modules register.

A command that fails ends in one line on stderr, ``ddbcdc COMMAND: what failed, where``, and
exit status 2: ddbcdc's own errors (:class:`~ddbcdc.errors.DdbcdcError`, AWS's as
:class:`~ddbcdc.aws.errors.AwsError`) say it themselves; a file-system, botocore, SQLAlchemy
or psycopg error no layer below named is named here, by its type (:func:`environment_fault`).
Anything else is a bug and keeps its traceback. ``--log-level DEBUG`` prints the traceback
of every failure too.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from ddbcdc import __version__
from ddbcdc.errors import DdbcdcError

__all__ = ["COMMANDS", "environment_fault", "main"]

log = logging.getLogger(__name__)

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
    from ddbcdc.logs import LineFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LineFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler])


def _writes_fail(fd: int) -> bool:
    """Whether writing ``fd`` fails (a full disk refuses even an empty write)."""
    try:
        sys.stdout.flush()
        os.write(fd, b"")
    except OSError:
        return True
    return False


def _stdout_failed(exc: OSError) -> bool:
    """Whether ``exc``, which ended a command, is standard output that cannot be written (it
    names no file, and stdout refuses writes); if so, stdout is pointed at /dev/null, so that
    the interpreter's last flush does not fail again."""
    if exc.filename is not None:
        return False
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):  # not a file: a test's capture
        return False
    if not isinstance(exc, BrokenPipeError) and not _writes_fail(fd):
        return False
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)
    return True


def environment_fault(exc: Exception) -> str | None:
    """One line naming an AWS, PostgreSQL or file-system error no layer below has named.

    None for anything else: a bug, whose traceback is what its reader needs. The modules
    that know AWS and PostgreSQL are imported only here, when such an error happened.
    """
    if isinstance(exc, OSError):
        if _stdout_failed(exc):
            return f"cannot write to standard output: {exc.strerror or type(exc).__name__}"
        return f"{type(exc).__name__}: {exc}"
    package = type(exc).__module__.partition(".")[0]
    if package in ("sqlalchemy", "psycopg"):
        from ddbcdc.db import fault

        return fault(exc)
    if package == "botocore":
        from ddbcdc.aws.errors import fault as aws_fault

        return aws_fault(exc)
    return None


def _failed(command: str, line: str, exc: BaseException | None) -> int:
    """End ``command`` with ``line`` on stderr (the traceback too at ``--log-level DEBUG``)."""
    log.debug("ddbcdc %s failed", command, exc_info=exc)
    print(f"ddbcdc {command}: {line}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ddbcdc`` console script.

    Exit status: the command's own (0 done; 1 done, with something to look at; 3 for
    ``status``: a stalled shard), 2 when it refused or failed, with one line on stderr
    naming what and where, 130 when interrupted.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser(argv).parse_args(argv)
        configure_logging(args.log_level)
    except KeyboardInterrupt:  # while the command's modules load
        return 130
    if sys.stdout is None:  # the process started with it closed: the output would be lost
        return _failed(args.command, "cannot write to standard output: it is closed", None)
    try:
        status = int(args.func(args))
        sys.stdout.flush()  # a failure to write the output is the command's failure
        return status
    except DdbcdcError as exc:
        return _failed(args.command, str(exc), exc)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        line = environment_fault(exc)
        if line is None:
            raise
        return _failed(args.command, line, exc)


if __name__ == "__main__":
    sys.exit(main())
