"""``ddbcdc snapshot``: a parallel, consistent, rate-capped, resumable Scan into PostgreSQL.

Each segment of the run scans its part of the table page by page. Every item of a page is
written through the pipeline as an INSERT with version ``page request time - clock-skew
margin`` (sequence -1), and the segment's LastEvaluatedKey is committed in the same
transaction: a killed snapshot continues after its last committed page. The run's prune hold
(at its start time minus the margin, below every page's version) keeps every tombstone a page
row may meet until the run is done. docs/backfill-and-verify.md has the correctness argument.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ddbcdc.backfill import state
from ddbcdc.backfill.direct import DeferredRecords, DirectInserts
from ddbcdc.backfill.feed import BATCHES_IN_FLIGHT, Batch, feed, margin_us
from ddbcdc.backfill.records import (
    RecordMaker,
    format_us,
    key_digest,
    key_from_json,
    key_to_json,
    now_us,
)
from ddbcdc.backfill.scan import ReadLimiter, scan_pages
from ddbcdc.errors import ConfigurationError
from ddbcdc.pipeline import BatchResult, Pipeline, SourceRecord
from ddbcdc.progressbar import ProgressBar
from ddbcdc.schema.mapping import TableMapping, check_table_key
from ddbcdc.settings import Settings, read_version_us

__all__ = [
    "SnapshotOptions",
    "SnapshotResult",
    "key_attributes",
    "new_scan_run",
    "retention_watch",
    "run_snapshot",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SnapshotOptions:
    """How to scan.

    Attributes:
        segments: Scan segments (TotalSegments).
        parallel: segments scanned at once (default: all).
        max_rcu: read capacity units per second, from each page's ConsumedCapacity.
        max_items_per_second: items per second (instead of ``max_rcu``).
        page_size: Scan Limit (default: DynamoDB's 1 MB pages).
    """

    segments: int = 4
    parallel: int | None = None
    max_rcu: float | None = None
    max_items_per_second: float | None = None
    page_size: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.segments <= 1_000_000:
            raise ConfigurationError(f"--segments must be 1..1000000, got {self.segments}")
        for name in ("max_rcu", "max_items_per_second"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigurationError(f"--{name.replace('_', '-')} must be > 0")


@dataclass
class SnapshotResult:
    """What a snapshot (or its resumed part) did."""

    run_id: str
    counts: BatchResult = field(default_factory=BatchResult)
    pages: int = 0
    seconds: float = 0.0
    done: bool = False


def key_attributes(description: dict[str, Any]) -> list[str]:
    """The table's key attribute names, hash first (from DescribeTable's ``Table``)."""
    schema = sorted(description["KeySchema"], key=lambda k: k["KeyType"] != "HASH")
    return [k["AttributeName"] for k in schema]


def new_scan_run(
    settings: Settings, mapping: TableMapping, description: dict[str, Any], options: SnapshotOptions
) -> tuple[state.Run, list[state.Segment]]:
    """A new scan run of ``mapping``'s table, not yet stored: its hold is now - margin.

    Raises:
        ConfigurationError: the mapping's key is not the table's (``--force`` or not).
    """
    check_table_key(mapping, key_attributes(description), needs="a snapshot")
    started = datetime.now(UTC)
    run = state.Run(
        id=f"scan:{mapping.source_table}:{started:%Y%m%dT%H%M%S.%fZ}",
        kind="scan",
        source_table=mapping.source_table,
        target_table=mapping.target_table,
        source=description.get("TableArn", mapping.source_table),
        segments=options.segments,
        min_version_us=read_version_us(now_us(), margin_us(settings)),
        expected_items=description.get("ItemCount"),
        detail={
            "key": key_attributes(description),
            "max_rcu": options.max_rcu,
            "max_items_per_second": options.max_items_per_second,
            "page_size": options.page_size,
        },
    )
    return run, [state.Segment(n) for n in range(options.segments)]


class _Counter:
    def __init__(self, done: int) -> None:
        self.lock = threading.Lock()
        self.items = done
        self.pages = 0
        self.counts = BatchResult()

    def add(self, items: int, result: BatchResult) -> None:
        with self.lock:
            self.items += items
            self.pages += 1
            self.counts.add(result)


@dataclass(frozen=True)
class _Job:
    """What every segment of a run shares."""

    run: state.Run
    client: Any
    pipeline: Pipeline
    maker: RecordMaker
    direct: DirectInserts
    limiter: ReadLimiter
    page_size: int | None
    margin: int
    counter: _Counter
    stop: threading.Event


def _page_batches(job: _Job, segment: state.Segment) -> Iterator[Batch]:
    """The segment's pages from its committed position, each a batch with the segment's new
    position; each row's change made straight from its item where it can be (its record is
    made only when read: :mod:`ddbcdc.backfill.direct`)."""
    run, maker, direct = job.run, job.maker, job.direct
    where = f"{run.id} segment {segment.segment}"
    pages = scan_pages(
        job.client,
        run.source_table,
        segment=segment.segment,
        total_segments=run.segments,
        start_key=key_from_json(segment.position),
        limiter=job.limiter,
        page_size=job.page_size,
        stop=job.stop,
    )
    for page in pages:
        version, items = read_version_us(page.request_us, job.margin), page.items
        ids = [f"snapshot:{run.id}:{key_digest(maker.keys_of(item))}" for item in items]

        def record(
            i: int, items: list[Any] = items, ids: list[str] = ids, version: int = version
        ) -> SourceRecord:
            return maker.put(items[i], version_us=version, event_id=ids[i], where=where)

        changes = [
            direct.change(item, version_us=version, event_id=event_id)
            for item, event_id in zip(items, ids, strict=True)
        ]
        also = functools.partial(
            state.advance,
            run_id=run.id,
            segment=segment.segment,
            position=key_to_json(page.last_key),
            items=len(items),
            done=page.last_key is None,
        )
        yield Batch(DeferredRecords(len(items), record), also, changes)


def _segment_task(job: _Job, segment: state.Segment) -> None:
    """Scan one segment from its committed position; each page in one transaction with the
    segment's new position (the next page is fetched and prepared meanwhile)."""

    def counted(batch: Batch, result: BatchResult) -> None:
        job.counter.add(len(batch.records), result)

    feed(job.pipeline, _page_batches(job, segment), on_batch=counted, in_flight=BATCHES_IN_FLIGHT)


def retention_watch(
    retention_hours: float | None, expected_items: int | None
) -> Callable[[int, float], None]:
    """A progress callback warning once when the run will outlast most of the retention."""
    warned = False

    def tick(items: int, elapsed: float) -> None:
        nonlocal warned
        if warned or not retention_hours or not expected_items or elapsed < 30 or not items:
            return
        rate = items / elapsed
        total_h = (elapsed + max(0, expected_items - items) / rate) / 3600
        if total_h >= 0.8 * retention_hours:
            warned = True
            log.warning(
                "at %.0f items/s the snapshot takes %.1f h in all and the stream keeps %g h: "
                "the worker must keep up meanwhile, or changes made now expire before it "
                "applies them",
                rate,
                total_h,
                retention_hours,
            )

    return tick


def _watch(
    futures: list[Future[None]],
    counter: _Counter,
    progress: ProgressBar | None,
    on_tick: Callable[[int, float], None] | None,
) -> BaseException | None:
    """Wait for the segments; the first error, which stops the others (it is the cause)."""
    started = time.monotonic()
    pending = set(futures)
    while pending:
        _, pending = wait(pending, timeout=0.5, return_when=FIRST_EXCEPTION)
        if progress is not None:
            progress.update(counter.items)
        if on_tick is not None:
            on_tick(counter.items, time.monotonic() - started)
        failed = [f.exception() for f in futures if f.done() and f.exception() is not None]
        if failed:
            return failed[0]
    return None


def run_snapshot(
    settings: Settings,
    run: state.Run,
    *,
    client: Any,
    pipeline: Pipeline,
    options: SnapshotOptions,
    progress: ProgressBar | None = None,
    on_tick: Callable[[int, float], None] | None = None,
) -> SnapshotResult:
    """Scan every unfinished segment of ``run`` (new or resumed) into PostgreSQL.

    Marks the run done and releases its hold when every segment is done.

    Raises:
        DdbcdcError: the first error that stopped a segment (AWS, PostgreSQL); the run
            stays resumable. ``KeyboardInterrupt`` stops every segment after its current page.
    """
    segments = state.load_segments(pipeline.engine, run.id)
    todo = [s for s in segments if not s.done]
    job = _Job(
        run=run,
        client=client,
        pipeline=pipeline,
        maker=RecordMaker(pipeline.mappings[0], run.detail["key"]),
        direct=DirectInserts(pipeline, pipeline.mappings[0], run.detail["key"]),
        limiter=ReadLimiter(
            max_rcu=options.max_rcu, max_items_per_second=options.max_items_per_second
        ),
        page_size=options.page_size,
        margin=margin_us(settings),
        counter=_Counter(sum(s.items for s in segments)),
        stop=threading.Event(),
    )
    started = time.monotonic()
    log.info("snapshot %s: %d of %d segments to scan", run.id, len(todo), run.segments)
    workers = min(len(todo), options.parallel or len(todo)) or 1
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ddbcdc-scan") as pool:
        futures = [pool.submit(_segment_task, job, segment) for segment in todo]
        try:
            cause = _watch(futures, job.counter, progress, on_tick)
        finally:
            job.stop.set()
    result = SnapshotResult(run.id, job.counter.counts, job.counter.pages)
    result.seconds = time.monotonic() - started
    if cause is not None:
        raise cause
    state.finish(pipeline.engine, run.id)
    result.done = True
    log.info("snapshot %s done as of %s", run.id, format_us(run.min_version_us))
    return result
