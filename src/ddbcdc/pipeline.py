"""The only module that knows every stage: decode -> cleanse -> materialize, per batch.

:meth:`Pipeline.process` runs one batch of raw Kinesis records in ONE PostgreSQL
transaction: the changes that decode and cleanse are materialized, the poison ones are
dead-lettered, and the shard progress row is upserted, all committed together or not at all.
It is :meth:`Pipeline.prepare` (decode and cleanse: pure, no I/O, in :mod:`ddbcdc.prepare`)
followed by :meth:`Pipeline.apply` (the transaction), so a caller with many batches, like
``ddbcdc apply``, can prepare the next batch while PostgreSQL works on the current one.

What a database error does to a batch depends on what it means (:mod:`ddbcdc.db`):
a conflict with another transaction runs the batch again; a value PostgreSQL refuses makes
the batch run again in isolation, so the changes at fault are dead-lettered and every other
one applied; anything else raises :class:`~ddbcdc.errors.DatabaseUnavailableError` with
nothing committed (the worker retries the batch, never checkpointing past it). No record can
stall a batch: every record ends applied, superseded by an applied change, or dead-lettered.

A batch commits only under the mappings its tables were migrated to: it checks them in its
transaction (:class:`~ddbcdc.migrate.versions.Fence`) and raises
:class:`~ddbcdc.errors.MappingChangedError`, nothing committed, once a table has another.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Literal, TypeVar

import sqlalchemy as sa

from ddbcdc.batches import BatchResult, PreparedBatch, SourceRecord
from ddbcdc.cleanse import CleanChange, Cleanser
from ddbcdc.cleanse.routes import RoutedCleanser
from ddbcdc.db import RefusedError, create_engine, describe, run_transaction
from ddbcdc.errors import ConfigurationError, DatabaseUnavailableError
from ddbcdc.materialize import ApplyCounts, Materializer
from ddbcdc.materialize.deadletters import (
    DeadLetter,
    StoredDeadLetter,
    mark_replayed,
    reason_counts,
    record_failures,
    write_dead_letters,
)
from ddbcdc.materialize.progress import ShardPosition, end_shard, record_progress
from ddbcdc.materialize.prune import Pruner
from ddbcdc.migrate.versions import Fence, check_engine
from ddbcdc.prepare import Preparer, letter_of
from ddbcdc.schema.mapping import TableMapping, load_mappings, without_change_log
from ddbcdc.settings import DEFAULT_TOMBSTONE_HORIZON, Settings

__all__ = ["BatchResult", "Pipeline", "PreparedBatch", "ShardPosition", "SourceRecord"]

log = logging.getLogger(__name__)
T = TypeVar("T")


def _first(pair: tuple[int, DeadLetter]) -> int:
    return pair[0]


class Pipeline:
    """Decode, cleanse and materialize batches of Kinesis records into PostgreSQL.

    Args:
        engine: SQLAlchemy engine (``postgresql+psycopg://``).
        mappings: the table mappings (at least one).
        tombstone_horizon: how far behind the stream's position (in stream time) a change
            may still arrive; tombstones older than that are pruned (see
            :mod:`ddbcdc.materialize.prune`).
        prune_every: prune at most this often, after a batch that carries a shard position.
        timestamp_unit: passed to :func:`ddbcdc.decode.record.decode_record`.
        sweep: of routed mappings, every batch also deletes the rows of its keys from the
            tables their versions rows do not name (verify's repairs: drift may have put a
            row where no change did); else only when a change moved or removed a row.
        source_table: the table of records that do not name theirs (a DynamoDB stream's
            records, as its adapter delivers them, carry no table name); by default the
            only mapping's, when there is one.
        change_log: False writes no change log whatever the mappings (or their routes) say
            (backfill rows are not changes); the batches are still fenced by the mappings as
            they are.
    """

    def __init__(
        self,
        *,
        engine: sa.Engine,
        mappings: Sequence[TableMapping],
        tombstone_horizon: timedelta = DEFAULT_TOMBSTONE_HORIZON,
        prune_every: timedelta = timedelta(minutes=5),
        timestamp_unit: Literal["auto", "s", "ms", "us"] = "auto",
        sweep: bool = False,
        source_table: str | None = None,
        change_log: bool = True,
    ) -> None:
        if not mappings:
            raise ConfigurationError("a pipeline needs at least one table mapping")
        written = [m if change_log else without_change_log(m) for m in mappings]
        self.materializer = Materializer(written, sweep=sweep)
        self.preparer = Preparer(
            mappings,
            plan=self.materializer.plan,
            timestamp_unit=timestamp_unit,
            source_table=source_table,
        )
        self.engine = engine
        self.mappings = tuple(mappings)
        self.tombstone_horizon = tombstone_horizon
        self._prune_every = prune_every.total_seconds()
        # The first prune comes after a random part of the period: the processors of many
        # shards, started together, do not all prune at once.
        self._next_prune = time.monotonic() + random.uniform(0.1, 1.0) * self._prune_every
        self.fence = Fence(self.mappings)
        self._refusing = False  # the last batch isolated had changes PostgreSQL refused
        self.pruner = Pruner(list(self.materializer.tables.values()), horizon=tombstone_horizon)

    @classmethod
    def from_settings(cls, settings: Settings, *, check_mappings: bool = True) -> Pipeline:
        """A pipeline on ``settings.database_url`` with the mappings in ``mappings_dir``.

        Args:
            settings: the settings.
            check_mappings: refuse mappings other than those the tables were migrated to
                (:meth:`check_mappings`) before returning.
        """
        mappings = load_mappings(settings.mappings_dir)
        engine = create_engine(settings.require_database_url(), pre_ping=True)
        pipeline = cls(
            engine=engine,
            mappings=mappings,
            tombstone_horizon=settings.tombstone_horizon,
            timestamp_unit=settings.timestamp_unit,
            source_table=settings.source_table if settings.source == "dynamodb-streams" else None,
        )
        if check_mappings:
            try:
                pipeline.check_mappings()
            except BaseException:
                pipeline.close()
                raise
        return pipeline

    def check_mappings(self) -> None:
        """Refuse to write with mappings other than those the tables were migrated to: two
        writers with different mappings must never write one table.

        Raises:
            ConfigurationError: what differs, per mapping.
            DatabaseUnavailableError: PostgreSQL cannot be asked.
        """
        check_engine(self.engine, self.mappings)

    def close(self) -> None:
        """Release the engine's connections."""
        self.engine.dispose()

    # -- pure part -------------------------------------------------------------------------

    @property
    def timestamp_unit(self) -> Literal["auto", "s", "ms", "us"]:
        """The unit records' ApproximateCreationDateTime is read in."""
        return self.preparer.timestamp_unit

    def cleanser(self, table_name: str | None) -> Cleanser | RoutedCleanser:
        """See :meth:`ddbcdc.prepare.Preparer.cleanser`."""
        return self.preparer.cleanser(table_name)

    def prepare(
        self,
        records: Sequence[SourceRecord],
        *,
        cleansed: Sequence[CleanChange | None] | None = None,
    ) -> PreparedBatch:
        """Decode and cleanse a batch: the pure half of :meth:`process`, no I/O (see
        :meth:`ddbcdc.prepare.Preparer.prepare`)."""
        return self.preparer.prepare(records, cleansed=cleansed)

    # -- database part ---------------------------------------------------------------------

    def _materialize(
        self, conn: sa.Connection, prepared: PreparedBatch, isolate: bool
    ) -> tuple[ApplyCounts, list[tuple[int, DeadLetter]]]:
        self.fence.enter(conn, {c.mapping.target_table for c in prepared.changes})
        if isolate:
            counts = self.materializer.apply_isolated(conn, prepared.changes, plan=prepared.plan)
            self._refusing = bool(counts.failed)
        else:
            counts = self.materializer.apply(conn, prepared.changes, plan=prepared.plan)
        letters = []
        for change, reason in counts.failed:
            index = prepared.sources[id(change)]
            source = prepared.records[index]
            mapping = change.mapping
            letter = letter_of(
                "apply",
                reason,
                source,
                mapping.source_table,
                mapping.target_table,
                change.approximate_creation_us,
            )
            letters.append((index, letter))
        return counts, letters

    def _run(
        self,
        prepared: PreparedBatch,
        work: Callable[[sa.Connection, PreparedBatch, bool], BatchResult],
    ) -> BatchResult:
        # After a batch PostgreSQL refused changes of, the next is isolated at once: refusals
        # come in runs (a bad deploy, a new constraint), and the fast path would fail first.
        if not self._refusing:
            try:
                return run_transaction(self.engine, lambda conn: work(conn, prepared, False))
            except RefusedError as exc:
                log.warning("PostgreSQL refused a value of the batch (%s); isolating it", exc)
        try:
            return run_transaction(self.engine, lambda conn: work(conn, prepared, True))
        except RefusedError as exc:
            # Every change was tried in a savepoint of its own: what failed now is not one.
            raise DatabaseUnavailableError(f"PostgreSQL refused the batch: {exc}") from exc

    def process(
        self, records: Sequence[SourceRecord], *, position: ShardPosition | None = None
    ) -> BatchResult:
        """Decode, cleanse and materialize one batch in one transaction.

        Poison records are dead-lettered in the same transaction; with ``position``, the
        shard's progress row is upserted in it too.

        Raises:
            DatabaseUnavailableError: PostgreSQL unreachable or the commit failed (then
                nothing of the batch is committed).
        """
        return self.apply(self.prepare(records), position=position)

    def apply(
        self,
        batch: PreparedBatch,
        *,
        position: ShardPosition | None = None,
        also: Callable[[sa.Connection], None] | None = None,
        where: Callable[[int], str] | None = None,
    ) -> BatchResult:
        """Materialize a prepared batch in one transaction (see :meth:`process`).

        With ``position`` (a shard's batch), tombstones are pruned afterwards when due, in
        transactions of their own. ``also`` runs in the batch's transaction after it (a
        snapshot's segment position: committed with its page or not at all); it runs again
        when the batch is retried. ``where`` names where the record at an index is in its
        file: its dead letter keeps it (``source_position``).
        """
        received = len(batch.records)
        newest_us = batch.newest_us()
        tables = batch.newest_by_table() if position is not None else None

        def work(conn: sa.Connection, prepared: PreparedBatch, isolate: bool) -> BatchResult:
            counts, failed = self._materialize(conn, prepared, isolate)
            located = sorted(prepared.poison + failed, key=_first)
            letters = [
                x if where is None else replace(x, source_position=where(i)) for i, x in located
            ]
            write_dead_letters(conn, letters)
            if position is not None:
                record_progress(conn, position, received, newest_us, tables)
            if also is not None:
                also(conn)
            return BatchResult(
                received,
                counts.upserted,
                counts.deleted,
                counts.stale,
                len(letters),
                reason_counts(letters),
                prepared,
                unmatched=dict(prepared.unmatched),
            )

        result = self._run(batch, work)
        result.committed_at = time.time()
        if position is not None and time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + self._prune_every
            self.prune_tombstones()
        return result

    def replay(self, letters: Sequence[StoredDeadLetter]) -> BatchResult:
        """Re-run stored dead letters through the pipeline in one transaction.

        Those that now apply (or are superseded) get ``replayed_at``; those that still fail
        keep their row with the new error. Returns the counts (``dead_lettered``: still
        failing).
        """
        records = [
            SourceRecord(x.payload, x.shard_id, x.sequence_number, x.partition_key) for x in letters
        ]

        def work(conn: sa.Connection, prepared: PreparedBatch, isolate: bool) -> BatchResult:
            counts, failed = self._materialize(conn, prepared, isolate)
            still = sorted(prepared.poison + failed, key=_first)
            record_failures(conn, [(letters[i].id, letter) for i, letter in still])
            failing = {i for i, _ in still}
            mark_replayed(conn, [x.id for i, x in enumerate(letters) if i not in failing])
            return BatchResult(
                len(records), counts.upserted, counts.deleted, counts.stale, len(still)
            )

        return self._run(self.prepare(records), work)

    def end_shard(self, application: str, shard_id: str) -> None:
        """Mark a shard ended (fully applied): its position no longer holds pruning back."""
        run_transaction(self.engine, lambda conn: end_shard(conn, application, shard_id))

    def prune_tombstones(self) -> int:
        """Prune tombstones as far as stream time, holds and dead letters allow.

        Errors are logged, not raised: a prune that could not run runs at the next round.

        Returns:
            How many tombstones were deleted.
        """
        try:
            return self.pruner.run(self.engine)
        except (sa.exc.DBAPIError, OSError) as exc:
            log.warning("tombstone prune failed, will try again: %s", describe(exc))
            return 0
