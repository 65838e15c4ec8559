"""Importing an export: data file by data file, checked first, resumable, versioned.

A full export is the table as of its ``exportTime``: each item becomes an INSERT with version
``exportTime - clock-skew margin`` (the export's clock and the stream's are different AWS
clocks; a stream change of the same item after the export then always wins). An incremental
export's lines carry their own ``WriteTimestampMicros``: that is their version, and a line
without NewImage is a REMOVE, leaving a tombstone.

The run (``export:<export id>``: running the same import again continues it) holds pruning at
its lowest version; an export at or below the table's prune floor is refused up front
(:class:`~ddbcdc.backfill.state.BelowFloorError`). Each data file is checked (MD5, line
count) before any of it is applied, then applied in batches, each batch committing the
file's line position with it; a killed import continues at the first uncommitted line.

A data file that does not match its manifest is skipped, whole, and the import goes on with
the others: the files are independent (every row carries its own version, so their order
does not matter), and an operator of a 10,000-file export wants every good file applied and
every bad one named in one pass, not one bad file per run. The run then stays unfinished,
holding pruning, until a later run has imported the files named (fetched again); that run
imports only them. Anything else (PostgreSQL, S3, a mapping changed) stops the import at
once: it would fail every file the same way.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import orjson

from ddbcdc.backfill import state
from ddbcdc.backfill.direct import DeferredRecords, DirectInserts
from ddbcdc.backfill.export import DataFile, ExportError, ExportLocation, Manifest, gzip_lines
from ddbcdc.backfill.feed import BATCHES_IN_FLIGHT, Batch, feed
from ddbcdc.backfill.records import RecordMaker, format_us
from ddbcdc.cleanse import CleanChange
from ddbcdc.errors import ConfigurationError
from ddbcdc.pipeline import BatchResult, Pipeline, SourceRecord
from ddbcdc.progressbar import ProgressBar
from ddbcdc.schema.mapping import TableMapping
from ddbcdc.settings import read_version_us

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "ImportResult",
    "export_run",
    "import_export",
    "line_change",
    "line_record",
]

log = logging.getLogger(__name__)

#: Export lines applied per transaction (``--batch-size`` of ``snapshot --from-export`` and
#: ``export``).
DEFAULT_BATCH_SIZE = 10_000

_ITEM = b'{"Item":'
_ITEM_KEY = b'"Item"'


@dataclass
class ImportResult:
    """What an import (or its resumed part) did.

    Attributes:
        files: data files imported by this run.
        bad: why each data file that does not match its manifest was skipped (nothing of
            it applied), in file order; the run is not done while there are any.
    """

    run_id: str
    counts: BatchResult = field(default_factory=BatchResult)
    files: int = 0
    bad: list[str] = field(default_factory=list)
    done: bool = False


def export_run(
    manifest: Manifest, location: ExportLocation, *, margin_us: int, mapping: TableMapping
) -> tuple[state.Run, list[state.Segment]]:
    """The run of an export (not yet stored), its hold at the export's lowest version.

    Raises:
        ConfigurationError: the export is of another table, or has no time to version by.
    """
    if manifest.table_name is not None and manifest.table_name != mapping.source_table:
        raise ConfigurationError(
            f"{location.describe()} is an export of table {manifest.table_name}, not of "
            f"{mapping.source_table}"
        )
    if manifest.incremental:
        lowest = manifest.from_us
        kind = "incremental_export"
    else:
        exported = manifest.export_time_us
        lowest = None if exported is None else read_version_us(exported, margin_us)
        kind = "export"
    if lowest is None:
        raise ConfigurationError(f"{location.describe()}: the manifest has no export time")
    run = state.Run(
        id=f"export:{manifest.export_id}",
        kind=kind,
        source_table=mapping.source_table,
        target_table=mapping.target_table,
        source=location.describe(),
        segments=len(manifest.files),
        min_version_us=lowest,
        expected_items=manifest.item_count,
        detail={
            "export_time": None if manifest.export_time_us is None else manifest.export_time_us,
            "export_type": manifest.export_type,
            "key": [c.source for c in mapping.key_columns],
            "checked": manifest.has_manifests,
            "files": [[f.key, f.item_count, f.md5] for f in manifest.files],
        },
    )
    segments = [state.Segment(n, f.key, {"line": 0}) for n, f in enumerate(manifest.files)]
    return run, segments


def _number(value: Any) -> int:
    """WriteTimestampMicros, typed (``{"N": "..."}``) or plain."""
    if isinstance(value, dict):
        value = value.get("N")
    return int(value)


def line_record(
    line: bytes, *, maker: RecordMaker, version_us: int | None, event_id: str, where: str
) -> SourceRecord:
    """One export line as a change record (``version_us`` None: an incremental line).

    A line that is not what an export holds is passed on as it is: the pipeline
    dead-letters it with its exact bytes and ``where`` it came from.
    """
    try:
        doc = orjson.loads(line)
        if version_us is not None:
            item = doc["Item"]
            if len(doc) == 1 and line.startswith(_ITEM) and line.count(_ITEM_KEY) == 1:
                # {"Item":<item>}: the item's own text goes on as the NewImage.
                text = line[len(_ITEM) : line.rindex(b"}")]
                return maker.put_json(
                    item, text, version_us=version_us, event_id=event_id, where=where
                )
            return maker.put(item, version_us=version_us, event_id=event_id, where=where)
        written = _number(doc["Metadata"]["WriteTimestampMicros"])
        image = doc.get("NewImage")
        if image is None:
            return maker.remove(
                doc["Keys"],
                version_us=written,
                event_id=event_id,
                where=where,
                old_image=doc.get("OldImage"),
            )
        return maker.put(image, version_us=written, event_id=event_id, where=where)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return SourceRecord(line, partition_key=where)


def line_change(
    line: bytes, *, direct: DirectInserts, version_us: int, event_id: str
) -> CleanChange | None:
    """A full export's line as its change (``{"Item": ...}`` made straight from the item),
    or None: :func:`line_record` then makes its record, which decides."""
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if type(doc) is not dict:
        return None
    return direct.change(doc.get("Item"), version_us=version_us, event_id=event_id)


@dataclass(frozen=True, slots=True)
class _Lines:
    """A batch's lines of one data file, from line number ``first`` (0-based)."""

    job: _Import
    segment: state.Segment
    lines: list[bytes]
    first: int

    @property
    def prefix(self) -> str:
        """The event ids' common part: ``export:<export id>:<file>:``, the line number next."""
        return f"{self.job.run.id}:{self.segment.segment}:"

    def record(self, index: int) -> SourceRecord:
        """The record of line ``index`` of the batch (the reference way, and dead letters)."""
        number = self.first + index
        return line_record(
            self.lines[index],
            maker=self.job.maker,
            version_us=self.job.version_us,
            event_id=f"{self.prefix}{number}",
            where=f"{self.segment.name}:{number + 1}",
        )

    def changes(self) -> list[CleanChange | None] | None:
        """The lines' changes made straight from their items (a full export's; None for an
        incremental export's, whose lines go the reference way)."""
        version_us = self.job.version_us
        if version_us is None:
            return None
        change, direct, prefix = line_change, self.job.direct, self.prefix
        return [
            change(line, direct=direct, version_us=version_us, event_id=f"{prefix}{number}")
            for number, line in enumerate(self.lines, self.first)
        ]


def _batches(job: _Import, segment: state.Segment, raw: Any) -> Iterator[Batch]:
    first = int((segment.position or {}).get("line", 0))
    lines = islice(gzip_lines(raw), first, None)
    while chunk := list(islice(lines, job.batch_size)):
        batch = _Lines(job, segment, chunk, first)
        first += len(chunk)
        also = functools.partial(
            state.advance,
            run_id=job.run.id,
            segment=segment.segment,
            position={"line": first},
            items=len(chunk),
            done=False,
        )
        yield Batch(DeferredRecords(len(chunk), batch.record), also, batch.changes())


class _Progress:
    """Items done, over every file of the run (files may be imported at once)."""

    def __init__(self, bar: ProgressBar | None, done: int) -> None:
        self.bar = bar
        self.done = done
        self.lock = threading.Lock()

    def batch(self, batch: Batch, result: BatchResult) -> None:
        with self.lock:
            self.done += len(batch.records)
            if self.bar is not None:
                self.bar.update(self.done)


@dataclass(frozen=True)
class _Import:
    """What every data file of a run shares."""

    run: state.Run
    location: ExportLocation
    pipeline: Pipeline
    maker: RecordMaker
    direct: DirectInserts
    version_us: int | None
    batch_size: int
    progress: _Progress


def _import_file(job: _Import, segment: state.Segment) -> BatchResult:
    """One data file: checked, then applied from its committed line, then marked done."""
    run = job.run
    entry = run.detail["files"][segment.segment]
    with job.location.checked(DataFile(*entry)) as raw:
        batches = _batches(job, segment, raw)
        counts = feed(
            job.pipeline, batches, on_batch=job.progress.batch, in_flight=BATCHES_IN_FLIGHT
        )
    state.mark_done(job.pipeline.engine, run.id, segment.segment)
    log.info("export %s: %s applied", run.id, segment.name)
    return counts


def import_export(
    run: state.Run,
    location: ExportLocation,
    *,
    pipeline: Pipeline,
    batch_size: int = DEFAULT_BATCH_SIZE,
    parallel: int = 1,
    progress: ProgressBar | None = None,
) -> ImportResult:
    """Import every unfinished data file of ``run`` (``parallel`` files at once); mark the
    run done when all are.

    A data file that does not match its manifest is skipped (nothing of it applied) and
    named in :attr:`ImportResult.bad`; every other file is imported, and the run stays
    unfinished (resumable, holding pruning) until a later run has imported the skipped ones.

    Raises:
        DatabaseUnavailableError, MappingChangedError, ...: anything but a bad data file
            stops the import at once (the batches committed stay, the run resumable).
    """
    segments = state.load_segments(pipeline.engine, run.id)
    mapping, key = pipeline.mappings[0], run.detail["key"]
    job = _Import(
        run=run,
        location=location,
        pipeline=pipeline,
        maker=RecordMaker(mapping, key),
        direct=DirectInserts(pipeline, mapping, key),
        version_us=None if run.kind == "incremental_export" else run.min_version_us,
        batch_size=batch_size,
        progress=_Progress(progress, sum(s.items for s in segments)),
    )
    todo = [s for s in segments if not s.done]
    result = ImportResult(run.id)
    bad: dict[int, str] = {}
    with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="ddbcdc-file") as pool:
        futures = {pool.submit(_import_file, job, segment): segment for segment in todo}
        try:
            for future in as_completed(futures):
                try:
                    result.counts.add(future.result())
                except ExportError as exc:  # this file's fault: the others go on
                    log.info("export %s: %s skipped: %s", run.id, futures[future].name, exc)
                    bad[futures[future].segment] = str(exc)
                    continue
                result.files += 1
        except BaseException:
            pool.shutdown(cancel_futures=True)  # files not started stay for the next run
            raise
    result.bad = [bad[n] for n in sorted(bad)]
    if result.bad:
        return result
    state.finish(pipeline.engine, run.id)
    result.done = True
    log.info("export %s done (rows as of %s)", run.id, format_us(run.min_version_us))
    return result
