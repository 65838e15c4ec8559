"""``ddbcdc apply [FILE|-]``: apply change records from a file to PostgreSQL.

One record per line, raw JSON or base64 of it (as ``ddbcdc decode`` reads them), in the
Kinesis Data Streams for DynamoDB or DynamoDB Streams format. Lines are applied in batches
(``--batch-size``) through the same pipeline the worker runs: each batch in one transaction,
poison lines dead-lettered. Prints a summary; exits 1 when any line was dead-lettered.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from typing import IO, Any

from ddbcdc.pipeline import BatchResult, Pipeline, SourceRecord
from ddbcdc.settings import Settings

__all__ = ["apply_lines", "register"]


def _records(stream: IO[bytes]) -> Iterator[SourceRecord]:
    for line in stream:
        data = line.strip()
        if data:
            yield SourceRecord(data=data)


def apply_lines(pipeline: Pipeline, stream: IO[bytes], *, batch_size: int) -> BatchResult:
    """Apply every non-empty line of ``stream`` through ``pipeline`` in batches.

    Batches are applied in order, one transaction each; the next batch is decoded and
    cleansed in a second thread while PostgreSQL works on the current one (the database
    driver releases the GIL while it waits).

    Returns:
        The summed counts of all batches.
    """
    total = BatchResult()
    records = _records(stream)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ddbcdc-prepare") as pool:
        batch = list(islice(records, batch_size))
        pending = pool.submit(pipeline.prepare, batch) if batch else None
        while pending is not None:
            prepared = pending.result()
            batch = list(islice(records, batch_size))
            pending = pool.submit(pipeline.prepare, batch) if batch else None
            total.add(pipeline.apply(prepared))
    return total


def register(subparsers: Any) -> None:
    """Add the ``apply`` subcommand."""
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
    parser.set_defaults(func=run)


def _summary(result: BatchResult, seconds: float, as_json: bool) -> str:
    rate = result.received / seconds if seconds > 0 else 0.0
    fields = {
        "received": result.received,
        "upserted": result.upserted,
        "deleted": result.deleted,
        "stale": result.stale,
        "dead_lettered": result.dead_lettered,
        "seconds": round(seconds, 3),
        "changes_per_second": round(rate, 1),
    }
    if as_json:
        return json.dumps(fields)
    return (
        f"received {result.received}, upserted {result.upserted}, deleted {result.deleted}, "
        f"stale/skipped {result.stale}, dead-lettered {result.dead_lettered} "
        f"in {seconds:.2f}s ({rate:,.0f} changes/s)"
    )


def run(args: argparse.Namespace) -> int:
    """Run ``ddbcdc apply``."""
    if args.batch_size < 1:
        print("ddbcdc apply: --batch-size must be at least 1", file=sys.stderr)
        return 2
    pipeline = Pipeline.from_settings(Settings())
    started = time.perf_counter()
    try:
        if args.file == "-":
            result = apply_lines(pipeline, sys.stdin.buffer, batch_size=args.batch_size)
        else:
            with open(args.file, "rb") as stream:
                result = apply_lines(pipeline, stream, batch_size=args.batch_size)
    except OSError as exc:
        print(f"ddbcdc apply: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    finally:
        pipeline.close()
    print(_summary(result, time.perf_counter() - started, args.json))
    return 1 if result.dead_lettered else 0
