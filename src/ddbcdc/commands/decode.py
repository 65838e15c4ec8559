"""``ddbcdc decode [FILE|-]``: change records in, one decoded JSON object per line out."""

from __future__ import annotations

import argparse
import sys
from typing import Any, BinaryIO

from ddbcdc.decode import decode_record
from ddbcdc.errors import DecodeError
from ddbcdc.render import record_to_json

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``decode`` subcommand."""
    parser = subparsers.add_parser(
        "decode",
        help="decode change records (any input form) to lossless JSON lines",
        description=(
            "Read DynamoDB change records, one per line (raw JSON or base64 of it; Kinesis "
            "Data Streams for DynamoDB or DynamoDB Streams format), and print each decoded "
            "as one JSON object per line: numbers exact (Decimals as strings), bytes as "
            "base64, sets as sorted lists. Bad lines are reported on stderr with their line "
            "number; the exit code is 1 if any line failed."
        ),
    )
    parser.add_argument("file", nargs="?", default="-", help="input file, - for stdin")
    parser.add_argument("--pretty", action="store_true", help="indented output for people")
    parser.add_argument(
        "--timestamp-unit",
        choices=("auto", "s", "ms", "us"),
        default="auto",
        help="unit of ApproximateCreationDateTime (default: auto, by magnitude)",
    )
    parser.set_defaults(func=run)


def _decode_lines(source: BinaryIO, out: BinaryIO, *, unit: Any, pretty: bool) -> int:
    failed = 0
    for number, line in enumerate(source, start=1):
        line = line.strip()
        if not line:
            continue
        try:
            out.write(record_to_json(decode_record(line, timestamp_unit=unit), pretty=pretty))
        except (DecodeError, TypeError) as exc:
            print(f"line {number}: {exc}", file=sys.stderr)
            failed += 1
            continue
        out.write(b"\n")
    return failed


def run(args: argparse.Namespace) -> int:
    """Decode every line of ``args.file``; 1 if any line failed, 0 otherwise."""
    out = sys.stdout.buffer
    try:
        if args.file == "-":
            failed = _decode_lines(
                sys.stdin.buffer, out, unit=args.timestamp_unit, pretty=args.pretty
            )
        else:
            with open(args.file, "rb") as source:
                failed = _decode_lines(source, out, unit=args.timestamp_unit, pretty=args.pretty)
    except OSError as exc:
        print(f"ddbcdc decode: {exc}", file=sys.stderr)
        return 2
    finally:
        out.flush()
    if failed:
        print(f"ddbcdc decode: {failed} line(s) failed", file=sys.stderr)
    return 1 if failed else 0
