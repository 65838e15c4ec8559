"""Synthesized records -> the pipeline, batch by batch, with bookkeeping in each transaction.

Backfill rows go through :class:`~ddbcdc.pipeline.Pipeline` like stream changes, with one
difference: the pipeline writes **no change log** (``change_log=False``; its batches are
still fenced by the mapping as its file says). A snapshot or export row is not a change
(nothing happened to the item at that version), and logging millions of them would bury the
real changes in ``ddbcdc_changes__<table>`` and double the cost of an import; the live and
versions tables are written exactly as for a change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
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

__all__ = ["Batch", "backfill_pipeline", "feed", "mapping_for", "margin_us", "rows_pipeline"]


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
    (:func:`rows_pipeline`); ``sweep``: repairs (see :class:`~ddbcdc.pipeline.Pipeline`)."""
    engine = create_engine(
        settings.require_database_url(),
        pre_ping=True,
        pool_size=max(1, connections),
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


def feed(
    pipeline: Pipeline,
    batches: Iterator[Batch],
    *,
    on_batch: Callable[[Batch, BatchResult], None] | None = None,
) -> BatchResult:
    """Apply ``batches`` in order, one transaction each.

    The next batch is read and prepared (decode, cleanse: the iterator runs there too) in a
    second thread while PostgreSQL applies the current one.
    """
    total = BatchResult()

    def prepare() -> tuple[Batch, PreparedBatch] | None:
        batch = next(batches, None)
        if batch is None:
            return None
        return batch, pipeline.prepare(batch.records, cleansed=batch.cleansed)

    try:
        with (
            short_switch_interval(),
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="ddbcdc-backfill") as pool,
        ):
            pending = pool.submit(prepare)
            while True:
                ready = pending.result()
                if ready is None:
                    return total
                pending = pool.submit(prepare)
                batch, prepared = ready
                result = pipeline.apply(prepared, also=batch.also)
                total.add(result)
                if on_batch is not None:
                    on_batch(batch, result)
    finally:
        # On a failed batch, the source (a scan holding its connection, an open export file)
        # is released now, once the reading thread is done, not whenever it is collected.
        close = getattr(batches, "close", None)
        if close is not None:
            close()
