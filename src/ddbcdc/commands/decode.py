"""``ddbcdc decode [FILE|-]``: change records in, one decoded JSON object per line out.

The input's form is detected from its content (see ``ddbcdc apply --help`` for the list:
JSON Lines, one pretty-printed record, arrays, Lambda events, get-records output, DynamoDB
export lines, gzip-compressed or not). Each record is printed as one JSON object: numbers
exact (Decimals as strings), bytes as base64, sets as sorted lists. A bad record is reported
on stderr with the form and its position (line number or array index) and the rest goes
on; the exit code is 1 if any record failed.
"""

from __future__ import annotations

import argparse
import errno
import sys
from datetime import timedelta
from typing import TYPE_CHECKING, Any, BinaryIO

from ddbcdc.commands import table_name

if TYPE_CHECKING:
    from ddbcdc.inputs import ExportOptions

__all__ = ["add_input_arguments", "close_input", "open_input", "register", "run"]


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``decode`` and ``apply`` share: what export lines need."""
    parser.add_argument(
        "--table",
        type=table_name,
        help="tableName of DynamoDB export lines and of records naming no table (default: "
        "the single mapping's source table, for apply)",
    )
    parser.add_argument(
        "--export-time",
        metavar="TIME",
        help="a full DynamoDB export's time (its manifest-summary.json exportTime), ISO-8601 "
        'or epoch seconds: every {"Item": ...} line gets it minus DDBCDC_CLOCK_SKEW_MARGIN as '
        "its version, as ddbcdc snapshot --from-export gives export rows",
    )
    parser.add_argument(
        "--key",
        metavar="ATTR[,ATTR]",
        help="the table's key attributes, for full-export items (default: from the mapping)",
    )


def open_input(path: str) -> BinaryIO:
    """``path`` opened to read bytes, or standard input for ``-``; close it with
    :func:`close_input`.

    Raises:
        OSError: the file cannot be opened, or standard input is closed.
    """
    if path != "-":
        return open(path, "rb")
    if sys.stdin is None:  # the process started with it closed
        raise OSError(errno.EBADF, "standard input is closed")
    return sys.stdin.buffer


def close_input(source: BinaryIO) -> None:
    """Close what :func:`open_input` opened (standard input stays open)."""
    if sys.stdin is None or source is not sys.stdin.buffer:
        source.close()


def register(subparsers: Any) -> None:
    """Add the ``decode`` subcommand."""
    parser = subparsers.add_parser(
        "decode",
        help="decode change records (any input form) to lossless JSON lines",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", nargs="?", default="-", help="input file, - for stdin")
    parser.add_argument("--pretty", action="store_true", help="indented output for people")
    parser.add_argument(
        "--timestamp-unit",
        choices=("auto", "s", "ms", "us"),
        default="auto",
        help="unit of ApproximateCreationDateTime (default: auto, by magnitude); export "
        "lines' versions are microseconds",
    )
    add_input_arguments(parser)
    parser.set_defaults(func=run)


def export_options(
    args: argparse.Namespace, *, table: str | None, keys: tuple[str, ...] | None
) -> ExportOptions:
    """ExportOptions from ``--export-time`` and ``--key``, else ``table`` and ``keys``; the
    clock-skew margin from the settings.

    Raises:
        ConfigurationError: an export time that is not a time.
    """
    from ddbcdc.decode.timestamps import epoch_us, parse_timestamp
    from ddbcdc.errors import ConfigurationError
    from ddbcdc.inputs import ExportOptions

    micros, margin = None, 0
    if args.export_time:
        from ddbcdc.settings import Settings

        try:
            micros = epoch_us(parse_timestamp(args.export_time))
        except ValueError as exc:
            raise ConfigurationError(f"--export-time: {exc}") from exc
        margin = Settings().clock_skew_margin // timedelta(microseconds=1)
    if args.key:
        keys = tuple(name.strip() for name in args.key.split(",") if name.strip())
    return ExportOptions(
        table=args.table or table, export_time_us=micros, key_attributes=keys, margin_us=margin
    )


def _mapped_keys(args: argparse.Namespace) -> tuple[str | None, tuple[str, ...] | None]:
    """The mapped table and its key attributes, when full-export items will need them."""
    if not args.export_time or args.key:
        return None, None
    from ddbcdc.errors import ConfigurationError
    from ddbcdc.schema.mapping import load_mappings
    from ddbcdc.settings import Settings

    try:
        mappings = load_mappings(Settings().mappings_dir)
    except ConfigurationError:
        return None, None
    chosen = [m for m in mappings if m.source_table == args.table] if args.table else mappings
    if len(chosen) != 1:
        return None, None
    return chosen[0].source_table, tuple(c.source for c in chosen[0].key_columns)


def _decode(source: BinaryIO, out: BinaryIO, args: argparse.Namespace) -> int:
    from ddbcdc.decode.record import decode_record
    from ddbcdc.decode.render import record_to_json
    from ddbcdc.errors import DecodeError, InputError
    from ddbcdc.inputs import InputReader

    table, keys = _mapped_keys(args)
    reader = InputReader(source, options=export_options(args, table=table, keys=keys))
    unit, pretty, failed = args.timestamp_unit, args.pretty, 0
    for where, record in reader.located():
        if isinstance(record, InputError):
            print(record, file=sys.stderr)
            failed += 1
            continue
        try:
            decoded = decode_record(
                record.data,
                timestamp_unit=unit,
                shard_id=record.shard_id,
                sequence_number=record.sequence_number,
            )
        except (DecodeError, TypeError) as exc:
            position = f"line {where}" if isinstance(where, int) else where
            print(f"{reader.form}, {position}: {exc}", file=sys.stderr)
            failed += 1
            continue
        out.write(record_to_json(decoded, pretty=pretty))
        out.write(b"\n")
    if reader.stopped is not None:
        raise reader.stopped
    return failed


def run(args: argparse.Namespace) -> int:
    """Decode every record of ``args.file``; 1 if any record failed, 0 otherwise."""
    from ddbcdc.errors import InputError

    out = sys.stdout.buffer
    try:
        source = open_input(args.file)
    except OSError as exc:
        print(f"ddbcdc decode: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        failed = _decode(source, out, args)
    except InputError as exc:
        print(f"ddbcdc decode: stopped: {exc}", file=sys.stderr)
        return 1
    finally:
        close_input(source)
    if failed:
        print(f"ddbcdc decode: {failed} record(s) failed", file=sys.stderr)
    return 1 if failed else 0
