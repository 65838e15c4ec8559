"""Synthesized records -> the pipeline, batch by batch, with bookkeeping in each transaction.

Backfill rows go through :class:`~ddbcdc.pipeline.Pipeline` like stream changes, with one
difference: the pipeline writes **no change log** (``change_log=False``; its batches are
still fenced by the mapping as its file says). A snapshot or export row is not a change
(nothing happened to the item at that version), and logging millions of them would bury the
real changes in ``ddbcdc_changes__<table>`` and double the cost of an import; the live and
versions tables are written exactly as for a change.

:func:`feed` can keep two batches of one source in PostgreSQL at once (``in_flight=2``, as a
snapshot segment and an export file do), on two connections, so both cores of PostgreSQL's
machine work on the source while the next batch is prepared. Batches still **commit in
order**: each waits, before its commit, for the one before it to commit, and rolls back when
that one failed, so the position a batch commits with it never passes a batch not committed
(:func:`apply_in_turn`).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa

from ddbcdc.cleanse import CleanChange
from ddbcdc.db import create_engine
from ddbcdc.errors import ConfigurationError
from ddbcdc.pipeline import BatchResult, Pipeline, PreparedBatch, SourceRecord
from ddbcdc.runtime import short_switch_interval
from ddbcdc.schema.mapping import TableMapping, load_mappings
from ddbcdc.settings import Settings

__all__ = [
    "BATCHES_IN_FLIGHT",
    "TURN_WAIT_S",
    "Batch",
    "apply_in_turn",
    "backfill_pipeline",
    "feed",
    "mapping_for",
    "margin_us",
    "rows_pipeline",
]

log = logging.getLogger(__name__)

#: Batches of one snapshot segment or export file in PostgreSQL at once (see the module doc).
BATCHES_IN_FLIGHT = 2
#: How long a batch, applied and holding its keys' locks, waits for the batch before it to
#: commit before it rolls back and waits without them (see :func:`apply_in_turn`).
TURN_WAIT_S = 5.0


@dataclass(frozen=True, slots=True)
class Batch:
    """Records to apply in one transaction, and what else to commit with them.

    ``cleansed``: per record, its change when made straight from its item
    (:mod:`ddbcdc.backfill.direct`), else None (see :meth:`Pipeline.prepare`).
    """

    records: Sequence[SourceRecord]
    also: Callable[[sa.Connection], None] | None = None
    cleansed: Sequence[CleanChange | None] | None = None


def mapping_for(settings: Settings, source_table: str) -> TableMapping:
    """The mapping of DynamoDB table ``source_table`` in ``settings.mappings_dir``.

    Raises:
        ConfigurationError: no mapping has that source table.
    """
    mappings = load_mappings(settings.mappings_dir)
    for mapping in mappings:
        if mapping.source_table == source_table:
            return mapping
    known = ", ".join(sorted(m.source_table for m in mappings)) or "none"
    raise ConfigurationError(
        f"no table mapping in {settings.mappings_dir} has source table {source_table!r} "
        f"(mapped: {known})"
    )


def margin_us(settings: Settings) -> int:
    """The clock-skew margin in microseconds."""
    return settings.clock_skew_margin // timedelta(microseconds=1)


def backfill_pipeline(
    settings: Settings, mapping: TableMapping, *, connections: int, sweep: bool = False
) -> Pipeline:
    """A pipeline for backfill rows of ``mapping`` on an engine of its own
    (:func:`rows_pipeline`), with connections for ``connections`` sources fed at once, each
    with :data:`BATCHES_IN_FLIGHT` batches; ``sweep``: repairs (see
    :class:`~ddbcdc.pipeline.Pipeline`)."""
    engine = create_engine(
        settings.require_database_url(),
        pre_ping=True,
        pool_size=max(1, connections) * BATCHES_IN_FLIGHT,
        max_overflow=2,
    )
    return rows_pipeline(
        engine, [mapping], tombstone_horizon=settings.tombstone_horizon, sweep=sweep
    )


def rows_pipeline(
    engine: sa.Engine,
    mappings: Sequence[TableMapping],
    *,
    tombstone_horizon: timedelta,
    sweep: bool = False,
) -> Pipeline:
    """The pipeline every backfill row goes through, first or replayed from the dead
    letters: no change log, versions in microseconds (as :mod:`ddbcdc.backfill.records`
    writes them)."""
    return Pipeline(
        engine=engine,
        mappings=mappings,
        tombstone_horizon=tombstone_horizon,
        timestamp_unit="us",
        change_log=False,
        sweep=sweep,
    )


class _OutOfTurnError(Exception):
    """The batch before did not commit within :data:`TURN_WAIT_S` (see :func:`apply_in_turn`)."""


def apply_in_turn(
    pipeline: Pipeline,
    batch: Batch,
    prepared: PreparedBatch,
    previous: Future[BatchResult] | None,
    *,
    wait_s: float = TURN_WAIT_S,
) -> BatchResult:
    """Apply a prepared batch, committing only once ``previous`` (the batch before it) has;
    when that one failed, roll back and raise its error.

    The batch waits holding its keys' locks. Should the batch before it wait for a lock of
    another writer that waits for one of this batch's (a live worker's batch over keys of
    both), none of the three would go on: after ``wait_s`` the batch rolls back, waits for
    the batch before it without its locks, and is applied again.
    """

    def in_turn(conn: sa.Connection) -> None:
        if previous is not None:
            try:
                previous.result(timeout=wait_s)
            except TimeoutError as exc:  # not the database's: rolls back, raised as it is
                raise _OutOfTurnError from exc
        if batch.also is not None:
            batch.also(conn)

    try:
        return pipeline.apply(prepared, also=in_turn)
    except _OutOfTurnError:
        assert previous is not None
        log.info("a backfill batch waited %.0f s for the one before it; applying it again", wait_s)
        previous.result()
        return pipeline.apply(prepared, also=batch.also)


def feed(
    pipeline: Pipeline,
    batches: Iterator[Batch],
    *,
    on_batch: Callable[[Batch, BatchResult], None] | None = None,
    in_flight: int = 1,
) -> BatchResult:
    """Apply ``batches`` in order, one transaction each, ``in_flight`` at once, committing in
    order (:func:`apply_in_turn`); ``on_batch`` is called in order, once a batch committed.

    The next batch is read and prepared (decode, cleanse: the iterator runs there too) in a
    thread of its own while PostgreSQL applies the ones before.
    """
    total = BatchResult()
    applying: deque[tuple[Batch, Future[BatchResult]]] = deque()

    def prepare() -> tuple[Batch, PreparedBatch] | None:
        batch = next(batches, None)
        if batch is None:
            return None
        return batch, pipeline.prepare(batch.records, cleansed=batch.cleansed)

    def settle() -> None:
        batch, applied = applying.popleft()
        result = applied.result()
        total.add(result)
        if on_batch is not None:
            on_batch(batch, result)

    try:
        with (
            short_switch_interval(),
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="ddbcdc-backfill") as reader,
            ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="ddbcdc-apply") as pool,
        ):
            pending = reader.submit(prepare)
            previous: Future[BatchResult] | None = None
            try:
                while (ready := pending.result()) is not None:
                    pending = reader.submit(prepare)
                    previous = pool.submit(apply_in_turn, pipeline, *ready, previous)
                    applying.append((ready[0], previous))
                    if len(applying) >= in_flight:
                        settle()
            finally:
                while applying:  # what is in PostgreSQL commits, in order, also on a failure
                    settle()
            return total
    finally:
        # On a failed batch, the source (a scan holding its connection, an open export file)
        # is released now, once the reading thread is done, not whenever it is collected.
        close = getattr(batches, "close", None)
        if close is not None:
            close()
