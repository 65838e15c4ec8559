"""``ddbcdc snapshot``: copy the items a table already holds into PostgreSQL.

Scans the live table (parallel segments, consistent reads, a read-rate cap) or imports a
DynamoDB export (``--from-export s3://bucket/prefix/AWSDynamoDB/<id>/`` or a local folder
of the same layout), writing every item through the same versioned path as the stream, while
the worker keeps applying changes. Resumable: a killed scan continues with ``--resume``, an
import by running it again. Preconditions (the stream and the worker cover the backfill,
retention, clock) are checked first; ``--force`` goes ahead despite them.

Exit status: 0 done, 1 done with dead-lettered items, 2 refused or failed (resumable).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

from ddbcdc.aws import clients as aws
from ddbcdc.aws.errors import AwsError
from ddbcdc.aws.streams import Stream, open_stream
from ddbcdc.backfill import state
from ddbcdc.backfill.export import ExportError, open_location, read_manifest
from ddbcdc.backfill.feed import backfill_pipeline, mapping_for, margin_us
from ddbcdc.backfill.importer import DEFAULT_BATCH_SIZE, export_run, import_export
from ddbcdc.backfill.preconditions import Finding, check_backfill, report, retention_hours
from ddbcdc.backfill.records import format_us, parse_time_us
from ddbcdc.backfill.snapshot import (
    SnapshotOptions,
    new_scan_run,
    retention_watch,
    run_snapshot,
)
from ddbcdc.commands import count, rate, scan_segments, table_name
from ddbcdc.errors import ConfigurationError, DdbcdcError, RetryableError
from ddbcdc.pipeline import BatchResult
from ddbcdc.progressbar import ProgressBar
from ddbcdc.schema.mapping import TableMapping
from ddbcdc.settings import Settings

__all__ = ["add_rate_options", "import_location", "register", "summary_line", "time_arg"]


#: Scan segments when ``--segments`` is not given.
DEFAULT_SEGMENTS = 4


def add_rate_options(parser: argparse.ArgumentParser) -> None:
    """``--segments``, ``--parallel``, the read-rate cap and ``--page-size``."""
    parser.add_argument(
        "--table", type=table_name, help="DynamoDB table (default: DDBCDC_SOURCE_TABLE)"
    )
    parser.add_argument(
        "--segments",
        type=scan_segments,
        help=f"Scan segments (default {DEFAULT_SEGMENTS}; a resumed scan keeps its own)",
    )
    parser.add_argument(
        "--parallel",
        type=count,
        help="segments scanned at once (default: all); export data files imported at once (1)",
    )
    cap = parser.add_mutually_exclusive_group()
    cap.add_argument("--max-rcu", type=rate, help="read capacity units per second, at most")
    cap.add_argument("--max-items-per-second", type=rate, help="items per second, at most")
    parser.add_argument("--page-size", type=count, help="items per Scan page (default: 1 MB)")
    parser.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def register(subparsers: Any) -> None:
    """Add the ``snapshot`` subcommand."""
    parser = subparsers.add_parser(
        "snapshot",
        help="copy the items a table already holds into PostgreSQL (scan or export)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_rate_options(parser)
    unfinished = parser.add_mutually_exclusive_group()
    unfinished.add_argument("--resume", action="store_true", help="continue the unfinished scan")
    unfinished.add_argument(
        "--restart", action="store_true", help="abandon an unfinished backfill and start again"
    )
    parser.add_argument("--force", action="store_true", help="go ahead despite failed checks")
    parser.add_argument("--from-export", metavar="URI", help="import this export instead")
    parser.add_argument(
        "--export-time",
        help="the time of an export without manifests (ISO-8601 or epoch seconds)",
    )
    parser.add_argument(
        "--batch-size",
        type=count,
        default=DEFAULT_BATCH_SIZE,
        help=f"export lines per transaction ({DEFAULT_BATCH_SIZE})",
    )
    parser.set_defaults(func=run)


def summary_line(run_id: str, counts: BatchResult, seconds: float, as_json: bool) -> str:
    """The closing summary of a backfill."""
    rate = counts.received / seconds if seconds > 0 else 0.0
    fields = {
        "run": run_id,
        "items": counts.received,
        "upserted": counts.upserted,
        "deleted": counts.deleted,
        "stale": counts.stale,
        "dead_lettered": counts.dead_lettered,
        "seconds": round(seconds, 3),
        "items_per_second": round(rate, 1),
    }
    if as_json:
        return json.dumps(fields)
    return (
        f"{run_id}: {counts.received} items, upserted {counts.upserted}, deleted "
        f"{counts.deleted}, stale {counts.stale}, dead-lettered {counts.dead_lettered} in "
        f"{seconds:.2f}s ({rate:,.0f} items/s)"
    )


def _checks(
    settings: Settings,
    args: argparse.Namespace,
    engine: Any,
    table: str,
    hold_us: int,
    **extra: Any,
) -> None:
    dynamodb = aws.client("dynamodb", settings, max_attempts=1)
    try:
        stream = open_stream(
            settings, dynamodb=dynamodb, kinesis=aws.client("kinesis", settings, max_attempts=1)
        )
        findings = check_backfill(
            settings,
            dynamodb=dynamodb,
            stream=stream,
            engine=engine,
            table=table,
            hold_us=hold_us,
            **extra,
        )
    except ConfigurationError as exc:
        findings = [Finding("fail", "stream", str(exc))]
    except AwsError as exc:  # a finding: --force goes ahead (an import needs no AWS)
        findings = [Finding("fail", "aws", f"the checks could not run: {exc}")]
    if not report(findings, force=args.force, out=sys.stderr):
        raise ConfigurationError("preconditions not met (see above; --force to go ahead)")


def import_location(
    settings: Settings,
    args: argparse.Namespace,
    mapping: TableMapping,
    uri: str,
    export_time_us: int | None,
) -> int:
    """Import the export at ``uri`` (new or continued) and print the summary."""
    s3 = aws.client("s3", settings) if uri.startswith("s3://") else None
    location = open_location(uri, s3=s3)
    manifest = read_manifest(location, export_time_us=export_time_us)
    run, segments = export_run(manifest, location, margin_us=margin_us(settings), mapping=mapping)
    pipeline = backfill_pipeline(settings, mapping, connections=args.parallel or 1)
    try:
        pipeline.check_mappings()  # before a run starts that no batch of it could write
        stored = state.load_run(pipeline.engine, run.id)
        if stored is not None and stored.status == "done":
            print(f"{run.id} was imported already ({stored.source})", file=sys.stderr)
            return 0
        if stored is not None and stored.status == "abandoned":
            state.forget(pipeline.engine, stored.id)  # imported again from the start
            stored = None
        if stored is None:
            _start(settings, args, pipeline.engine, run, segments, manifest.export_time_us)
            stored = run
        else:
            state.reassert(pipeline.engine, stored, what=_what(stored))
        if not manifest.has_manifests:
            print(f"warning: {uri} has no manifests: data files are not checked", file=sys.stderr)
        started = time.monotonic()
        with (
            state.claim(pipeline.engine, stored.id),
            _bar(args, stored.expected_items, "import") as progress,
        ):
            result = import_export(
                stored,
                location,
                pipeline=pipeline,
                batch_size=args.batch_size,
                parallel=args.parallel or 1,
                progress=progress,
            )
    finally:
        pipeline.close()
    print(summary_line(run.id, result.counts, time.monotonic() - started, args.json))
    if result.bad:
        for reason in result.bad:
            print(f"not imported: {reason}", file=sys.stderr)
        raise ExportError(
            f"{len(result.bad)} data file(s) of {run.id} not imported (named above), every "
            "other file imported; the run holds tombstone pruning until the same command, "
            "run again once they are fetched again, imports them"
        )
    return 1 if result.counts.dead_lettered else 0


def _start(
    settings: Settings,
    args: argparse.Namespace,
    engine: Any,
    run: state.Run,
    segments: list[state.Segment],
    export_time_us: int | None,
) -> None:
    running = state.find_running(engine, run.target_table)
    if running is not None:
        if not args.restart:
            raise ConfigurationError(
                f"backfill {running.id} of {run.target_table} is unfinished: continue it (the "
                "same command, or --resume for a scan) or abandon it with --restart"
            )
        state.abandon(engine, running.id)
    _checks(
        settings,
        args,
        engine,
        run.source_table,
        run.min_version_us,
        export_time_us=export_time_us,
    )
    state.start_run(engine, run, segments, what=_what(run))


def _what(run: state.Run) -> str:
    """How a run's lowest version is named in the prune-floor error."""
    return {
        "scan": "snapshot start - clock-skew margin",
        "export": "export time - clock-skew margin",
    }.get(run.kind, "the incremental export's start (exportFromTime)")


@contextlib.contextmanager
def _bar(args: argparse.Namespace, total: int | None, label: str) -> Iterator[ProgressBar | None]:
    """A progress bar (closed at the end), or None with ``--no-progress``."""
    bar = None if args.no_progress else ProgressBar(total, label=label)
    try:
        yield bar
    finally:
        if bar is not None:
            bar.close()


def _stream_or_none(settings: Settings) -> Stream | None:
    try:
        return open_stream(settings, kinesis=aws.client("kinesis", settings, max_attempts=2))
    except (ConfigurationError, AwsError):
        return None  # the preconditions said why


def _scan(settings: Settings, args: argparse.Namespace, mapping: TableMapping) -> int:
    options = SnapshotOptions(
        segments=args.segments or DEFAULT_SEGMENTS,
        parallel=args.parallel,
        max_rcu=args.max_rcu,
        max_items_per_second=args.max_items_per_second,
        page_size=args.page_size,
    )
    dynamodb = aws.client("dynamodb", settings, max_attempts=3)
    pipeline = backfill_pipeline(settings, mapping, connections=_workers(options))
    try:
        pipeline.check_mappings()  # before a run starts that no batch of it could write
        run = _scan_run(settings, args, pipeline.engine, dynamodb, mapping, options)
        if run.segments != options.segments:  # resumed: the run's own segments
            options = dataclasses.replace(options, segments=run.segments)
            pipeline.close()
            pipeline = backfill_pipeline(settings, mapping, connections=_workers(options))
        hours = retention_hours(_stream_or_none(settings))
        started = time.monotonic()
        with (
            state.claim(pipeline.engine, run.id),
            _bar(args, run.expected_items, "snapshot") as progress,
        ):
            try:
                result = run_snapshot(
                    settings,
                    run,
                    client=dynamodb,
                    pipeline=pipeline,
                    options=options,
                    progress=progress,
                    on_tick=retention_watch(hours, run.expected_items),
                )
            except DdbcdcError as exc:
                raise RetryableError(f"{exc} (continue: ddbcdc snapshot --resume)") from exc
    finally:
        pipeline.close()
    print(summary_line(run.id, result.counts, time.monotonic() - started, args.json))
    return 1 if result.counts.dead_lettered else 0


def _workers(options: SnapshotOptions) -> int:
    """Segments scanned at once."""
    return min(options.parallel or options.segments, options.segments)


def _expected_seconds(description: dict[str, Any], options: SnapshotOptions) -> float | None:
    if options.max_items_per_second:
        return float(description.get("ItemCount") or 0) / options.max_items_per_second
    if options.max_rcu:  # a consistent read costs one unit per 4 KB
        return float(description.get("TableSizeBytes") or 0) / 4096 / options.max_rcu
    return None


def _scan_run(
    settings: Settings,
    args: argparse.Namespace,
    engine: Any,
    dynamodb: Any,
    mapping: TableMapping,
    options: SnapshotOptions,
) -> state.Run:
    running = state.find_running(engine, mapping.target_table)
    if args.resume:
        if running is None or running.kind != "scan":
            raise ConfigurationError(f"no unfinished snapshot of {mapping.target_table} to resume")
        print(f"resuming {running.id} (as of {format_us(running.min_version_us)})", file=sys.stderr)
        if args.segments is not None and running.segments != args.segments:
            print(
                f"resuming with the run's own {running.segments} segments (--segments "
                f"{args.segments} is for a new scan)",
                file=sys.stderr,
            )
        state.reassert(engine, running, what=_what(running))
        return running
    description = dynamodb.describe_table(TableName=mapping.source_table)["Table"]
    run, segments = new_scan_run(settings, mapping, description, options)
    if running is not None:
        if not args.restart:
            raise ConfigurationError(
                f"backfill {running.id} of {mapping.target_table} is unfinished: continue it "
                "with --resume, or abandon it with --restart"
            )
        state.abandon(engine, running.id)
    expected = _expected_seconds(description, options)
    hold_us = run.min_version_us
    _checks(settings, args, engine, mapping.source_table, hold_us, expected_seconds=expected)
    state.start_run(engine, run, segments, what=_what(run))
    return run


def time_arg(name: str, text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return parse_time_us(text)
    except ValueError as exc:
        raise ConfigurationError(
            f"{name}: {text!r} is not an ISO-8601 time or epoch seconds"
        ) from exc


def run(args: argparse.Namespace) -> int:
    """Run ``ddbcdc snapshot``."""
    from ddbcdc.runtime import tune_gc

    settings = Settings()
    tune_gc()
    mapping = mapping_for(settings, args.table or settings.source_table)
    if args.batch_size < 1:
        raise ConfigurationError("--batch-size must be at least 1")
    if args.from_export:
        export_us = time_arg("--export-time", args.export_time)
        return import_location(settings, args, mapping, args.from_export, export_us)
    if args.export_time:
        raise ConfigurationError("--export-time goes with --from-export")
    return _scan(settings, args, mapping)
