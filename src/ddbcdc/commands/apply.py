"""``ddbcdc apply [FILE|-]``: apply change records from a file to PostgreSQL.

The input's form is detected from its content:

- JSON Lines: one record per line, raw JSON or base64 of it, in the Kinesis Data Streams for
  DynamoDB or DynamoDB Streams format (the fastest form);
- one pretty-printed record, or a JSON array of records;
- a Lambda event ({"Records": [...]}, Kinesis or DynamoDB Streams source);
- the output of `aws kinesis get-records` (each Records[].Data, with its sequence number and
  partition key) or of `aws dynamodbstreams get-records`;
- DynamoDB export lines: a full export's {"Item": ...} (an INSERT at --export-time; keys from
  the mapping, or --key) or an incremental export's {"Metadata": {"WriteTimestampMicros":
  ...}, "Keys": ..., "NewImage": ..., "OldImage": ...} (no NewImage: a REMOVE);
- any of these gzip-compressed (DynamoDB's export files are).

Large files are read incrementally. Records are applied in batches (--batch-size) through
the same pipeline the worker runs: each batch in one transaction, poison records
dead-lettered (and reported with their position); records that are not change records at
all are reported and skipped. Prints a summary; exits 1 when any record was dead-lettered or
skipped. Once a table was migrated to another mapping than the one ``apply`` started with,
nothing more is applied: it exits 2 naming the difference and the first record not applied
(the records before it are applied).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from ddbcdc.logs import one_line

if TYPE_CHECKING:
    from ddbcdc.errors import InputError, MappingChangedError
    from ddbcdc.inputs import ExportOptions, InputReader
    from ddbcdc.pipeline import BatchResult, Pipeline, PreparedBatch, SourceRecord

__all__ = ["ApplyOutcome", "apply_input", "apply_lines", "register"]

#: Dead letters and skipped records reported one by one, then only counted.
REPORT_AT_MOST = 100


def register(subparsers: Any) -> None:
    """Add the ``apply`` subcommand."""
    from ddbcdc.commands.decode import add_input_arguments

    parser = subparsers.add_parser(
        "apply",
        help="apply change records (any input form: JSON Lines, arrays, events, exports)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", nargs="?", default="-", help="input file, or - for stdin")
    parser.add_argument(
        "--batch-size", type=int, default=5000, help="records per transaction (default 5000)"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_input_arguments(parser)
    parser.set_defaults(func=run)


@dataclass
class ApplyOutcome:
    """What ``apply`` did: the pipeline's counts and the records it could not read."""

    result: BatchResult
    skipped: int = 0
    form: str = ""
    stopped: InputError | None = None  # the input could not be read past this
    fenced: MappingChangedError | None = None  # a table's mapping changed: nothing more applied
    not_applied_from: str = ""  # with ``fenced``: the first record not applied
    reported: int = field(default=0, repr=False)

    def report(self, line: str, out: Callable[[str], None]) -> None:
        """Print ``line`` unless REPORT_AT_MOST lines were printed already."""
        self.reported += 1
        if self.reported <= REPORT_AT_MOST:
            out(one_line(line))


def _batches(
    reader: InputReader, size: int, outcome: ApplyOutcome, out: Callable[[str], None]
) -> Iterator[tuple[list[SourceRecord], list[int | str]]]:
    """Batches of SourceRecords and where each is; unreadable records reported, left out."""
    for records, positions, errors in reader.batches(size):
        for error in errors:
            outcome.skipped += 1
            outcome.report(f"skipped: {error}", out)
        if records:
            yield records, positions


def _position(where: int | str) -> str:
    return f"line {where}" if isinstance(where, int) else where


def _where(source: str, positions: list[int | str]) -> Callable[[int], str]:
    """Where the record at an index of a batch is: the file, then the position in it."""
    return lambda index: f"{source}, {_position(positions[index])}"


def _report_poison(
    prepared: PreparedBatch,
    positions: list[int | str],
    outcome: ApplyOutcome,
    out: Callable[[str], None],
) -> None:
    for index, letter in prepared.poison:
        position = _position(positions[index])
        where_in = f" at {letter.error_path}" if letter.error_path else ""
        outcome.report(
            f"dead-lettered ({letter.stage}): {outcome.form}, {position}: {letter.error}{where_in}",
            out,
        )


def apply_input(
    pipeline: Pipeline,
    reader: InputReader,
    *,
    batch_size: int,
    out: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
    source: str | None = None,
) -> ApplyOutcome:
    """Apply every record ``reader`` reads through ``pipeline`` in batches.

    Batches are applied in order, one transaction each; the next batch is read, decoded,
    cleansed and planned in a second thread while PostgreSQL works on the current one (the
    database driver releases the GIL while it waits). Records decode or cleanse rejects are
    dead-lettered and reported through ``out`` with the form and their position, as are
    records that are no change records at all (those are skipped). When the input cannot
    be read further (broken JSON), what was read before is applied and ``stopped`` says
    where. When a table was migrated to another mapping (:class:`MappingChangedError`),
    nothing more is applied: ``fenced`` says why and ``not_applied_from`` where. With
    ``source`` (the file's name), each dead letter keeps where its record is in it.
    """
    from ddbcdc.errors import MappingChangedError
    from ddbcdc.pipeline import BatchResult
    from ddbcdc.runtime import short_switch_interval

    outcome = ApplyOutcome(BatchResult())
    batches = _batches(reader, batch_size, outcome, out)

    def next_batch() -> tuple[PreparedBatch, list[int | str]] | None:
        # Read and prepare in the one preparing thread: the database thread applies.
        batch = next(batches, None)
        if batch is None:
            return None
        prepared = pipeline.prepare(batch[0])
        outcome.form = reader.form
        return prepared, batch[1]

    with (
        short_switch_interval(),
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="ddbcdc-prepare") as pool,
    ):
        pending = pool.submit(next_batch)
        while (ready := pending.result()) is not None:
            pending = pool.submit(next_batch)
            prepared, positions = ready
            where = _where(source, positions) if source is not None else None
            try:
                outcome.result.add(pipeline.apply(prepared, where=where))
            except MappingChangedError as exc:
                outcome.fenced = exc
                outcome.not_applied_from = _position(positions[0])
                break
            _report_poison(prepared, positions, outcome, out)
    outcome.form = reader.form
    outcome.stopped = reader.stopped
    if outcome.reported > REPORT_AT_MOST:
        hidden = outcome.reported - REPORT_AT_MOST
        out(f"... and {hidden} more not shown (the dead letters: ddbcdc dlq list)")
    return outcome


def apply_lines(
    pipeline: Pipeline,
    stream: IO[bytes],
    *,
    batch_size: int,
    options: ExportOptions | None = None,
) -> BatchResult:
    """Apply every record of ``stream`` (any input form) through ``pipeline`` in batches.

    Returns:
        The summed counts of all batches.

    Raises:
        InputError: the input could not be read to its end (what came before is applied).
        MappingChangedError: a table was migrated to another mapping (what came before is
            applied).
    """
    from ddbcdc.inputs import InputReader

    outcome = apply_input(pipeline, InputReader(stream, options=options), batch_size=batch_size)
    if outcome.fenced is not None:
        raise outcome.fenced
    if outcome.stopped is not None:
        raise outcome.stopped
    return outcome.result


def _summary(outcome: ApplyOutcome, seconds: float, as_json: bool) -> str:
    result = outcome.result
    rate = result.received / seconds if seconds > 0 else 0.0
    fields = {
        "form": outcome.form,
        "received": result.received,
        "upserted": result.upserted,
        "deleted": result.deleted,
        "stale": result.stale,
        "dead_lettered": result.dead_lettered,
        "skipped": outcome.skipped,
        "seconds": round(seconds, 3),
        "changes_per_second": round(rate, 1),
    }
    if as_json:
        return json.dumps(fields)
    return (
        f"{outcome.form}: received {result.received}, upserted {result.upserted}, deleted "
        f"{result.deleted}, stale/skipped {result.stale}, dead-lettered {result.dead_lettered}"
        f", unreadable {outcome.skipped} in {seconds:.2f}s ({rate:,.0f} changes/s)"
    )


def _options(args: argparse.Namespace, pipeline: Pipeline) -> ExportOptions:
    """The table and key attributes of export lines: --table, else the single mapping."""
    from ddbcdc.commands.decode import export_options
    from ddbcdc.errors import ConfigurationError

    mappings = {m.source_table: m for m in pipeline.mappings}
    if args.table and args.table not in mappings:
        known = ", ".join(sorted(mappings))
        raise ConfigurationError(f"--table {args.table!r} has no mapping (mapped: {known})")
    mapping = mappings.get(args.table) if args.table else None
    if mapping is None and len(mappings) == 1:
        (mapping,) = mappings.values()
    keys = tuple(c.source for c in mapping.key_columns) if mapping else None
    return export_options(args, table=mapping.source_table if mapping else None, keys=keys)


def run(args: argparse.Namespace) -> int:
    """Run ``ddbcdc apply``."""
    from ddbcdc.commands.decode import close_input, open_input
    from ddbcdc.inputs import InputReader
    from ddbcdc.pipeline import Pipeline
    from ddbcdc.settings import Settings

    if args.batch_size < 1:
        print("ddbcdc apply: --batch-size must be at least 1", file=sys.stderr)
        return 2
    from ddbcdc.runtime import tune_gc

    pipeline = Pipeline.from_settings(Settings())
    tune_gc()
    started = time.perf_counter()
    try:
        options = _options(args, pipeline)
        stream = open_input(args.file)
        try:
            reader = InputReader(stream, options=options)
            source = "stdin" if args.file == "-" else args.file
            outcome = apply_input(pipeline, reader, batch_size=args.batch_size, source=source)
        finally:
            close_input(stream)
    except OSError as exc:
        print(f"ddbcdc apply: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    finally:
        pipeline.close()
    print(_summary(outcome, time.perf_counter() - started, args.json))
    if outcome.fenced is not None:
        print(
            f"ddbcdc apply: stopped: {outcome.fenced}; not applied: {outcome.form}, the records "
            f"from {outcome.not_applied_from} on (the records before it are applied)",
            file=sys.stderr,
        )
        return 2
    if outcome.stopped is not None:
        print(
            f"ddbcdc apply: stopped: {outcome.stopped} (the records before it are applied)",
            file=sys.stderr,
        )
        return 1
    return 1 if outcome.result.dead_lettered or outcome.skipped else 0
