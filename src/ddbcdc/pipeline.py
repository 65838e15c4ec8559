"""The only module that knows every stage: decode -> cleanse -> materialize, per batch.

:meth:`Pipeline.process` runs one batch of raw Kinesis records in ONE PostgreSQL
transaction: the changes that decode and cleanse are materialized, the poison ones are
dead-lettered, and the shard progress row is upserted, all committed together or not at all.
It is :meth:`Pipeline.prepare` (decode and cleanse: pure, no I/O) followed by
:meth:`Pipeline.apply` (the transaction), so a caller with many batches, like
``ddbcdc apply``, can prepare the next batch while PostgreSQL works on the current one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from ddbcdc.cleanse import CleanChange, Cleanser
from ddbcdc.deadletter import (
    DeadLetter,
    StoredDeadLetter,
    mark_replayed,
    record_failures,
    write_dead_letters,
)
from ddbcdc.errors import (
    CleanseError,
    ConfigurationError,
    DatabaseUnavailableError,
    PoisonRecordError,
)
from ddbcdc.mapping import TableMapping, load_mappings
from ddbcdc.materialize import ApplyCounts, Materializer
from ddbcdc.settings import Settings
from ddbcdc.tables import shard_progress

__all__ = ["BatchResult", "Pipeline", "PreparedBatch", "ShardPosition", "SourceRecord"]

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One raw Kinesis record: its exact data bytes and where it came from."""

    data: bytes
    shard_id: str | None = None
    sequence_number: str | None = None
    partition_key: str | None = None


@dataclass(frozen=True, slots=True)
class ShardPosition:
    """The position a batch ends at, recorded in ``ddbcdc_shard_progress``."""

    application: str
    shard_id: str
    sequence_number: str
    millis_behind_latest: int | None = None


@dataclass
class BatchResult:
    """What a batch did. ``received == upserted + deleted + stale + dead_lettered``."""

    received: int = 0
    upserted: int = 0
    deleted: int = 0
    stale: int = 0
    dead_lettered: int = 0

    def add(self, other: BatchResult) -> None:
        """Add another batch's counts to these."""
        self.received += other.received
        self.upserted += other.upserted
        self.deleted += other.deleted
        self.stale += other.stale
        self.dead_lettered += other.dead_lettered


def _first(pair: tuple[int, DeadLetter]) -> int:
    return pair[0]


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    """A batch decoded and cleansed, ready for :meth:`Pipeline.apply`."""

    records: Sequence[SourceRecord]
    changes: list[CleanChange]
    sources: dict[int, int]  # id(change) -> index of its SourceRecord
    poison: list[tuple[int, DeadLetter]]  # (index of the SourceRecord, dead letter)


class Pipeline:
    """Decode, cleanse and materialize batches of Kinesis records into PostgreSQL.

    Args:
        engine: SQLAlchemy engine (``postgresql+psycopg://``).
        mappings: the table mappings (at least one).
        tombstone_horizon: tombstones whose version is older than this are pruned.
        prune_every: prune at most this often (checked after each batch).
        timestamp_unit: passed to :func:`ddbcdc.decode.decode_record`.
    """

    def __init__(
        self,
        *,
        engine: sa.Engine,
        mappings: Sequence[TableMapping],
        tombstone_horizon: timedelta = timedelta(days=8),
        prune_every: timedelta = timedelta(minutes=5),
        timestamp_unit: Literal["auto", "s", "ms", "us"] = "auto",
    ) -> None:
        if not mappings:
            raise ConfigurationError("a pipeline needs at least one table mapping")
        self.engine = engine
        self.mappings = tuple(mappings)
        self.tombstone_horizon = tombstone_horizon
        self._prune_every = prune_every.total_seconds()
        self._next_prune = 0.0
        self._unit: Literal["auto", "s", "ms", "us"] = timestamp_unit
        self._cleansers = {m.source_table: Cleanser(m) for m in self.mappings}
        self._only = self._cleansers[self.mappings[0].source_table] if len(mappings) == 1 else None
        self.materializer = Materializer(self.mappings)

    @classmethod
    def from_settings(cls, settings: Settings) -> Pipeline:
        """A pipeline on ``settings.database_url`` with the mappings in ``mappings_dir``."""
        mappings = load_mappings(settings.mappings_dir)
        engine = sa.create_engine(settings.require_database_url(), pool_pre_ping=True)
        return cls(engine=engine, mappings=mappings, tombstone_horizon=settings.tombstone_horizon)

    def close(self) -> None:
        """Release the engine's connections."""
        self.engine.dispose()

    # -- pure part -------------------------------------------------------------------------

    def _cleanser(self, table_name: str | None) -> Cleanser:
        cleanser = self._cleansers.get(table_name) if table_name is not None else self._only
        if cleanser is None:
            known = ", ".join(sorted(self._cleansers))
            raise CleanseError(
                f"no table mapping for source table {table_name!r} (mapped: {known})",
                path="tableName",
            )
        return cleanser

    def prepare(self, records: Sequence[SourceRecord]) -> PreparedBatch:
        """Decode and cleanse a batch: the pure half of :meth:`process`, no I/O.

        Safe to run in another thread than :meth:`apply`.
        """
        from ddbcdc.decode import decode_record  # the decoder is its own stage

        prepared = PreparedBatch(records, [], {}, [])
        for index, source in enumerate(records):
            stage: Literal["decode", "cleanse"] = "decode"
            table_name: str | None = None
            target: str | None = None
            try:
                record = decode_record(
                    source.data,
                    timestamp_unit=self._unit,
                    shard_id=source.shard_id,
                    sequence_number=source.sequence_number,
                )
                stage, table_name = "cleanse", record.table_name
                cleanser = self._cleanser(table_name)
                target = cleanser.mapping.target_table
                change = cleanser.cleanse(record)
            except PoisonRecordError as exc:
                exc.with_position(shard_id=source.shard_id, sequence_number=source.sequence_number)
                letter = self._letter(stage, exc, source, table_name, target)
                prepared.poison.append((index, letter))
                continue
            prepared.sources[id(change)] = index
            prepared.changes.append(change)
        return prepared

    @staticmethod
    def _letter(
        stage: Literal["decode", "cleanse", "apply"],
        exc: Exception,
        source: SourceRecord,
        table_name: str | None,
        target: str | None,
    ) -> DeadLetter:
        log.warning(
            "dead-lettering a record at stage %s (shard %s, sequence %s): %s",
            stage,
            source.shard_id,
            source.sequence_number,
            exc,
        )
        return DeadLetter.from_error(
            stage,
            exc,
            payload=bytes(source.data),
            source_table=table_name,
            target_table=target,
            shard_id=source.shard_id,
            sequence_number=source.sequence_number,
            partition_key=source.partition_key,
        )

    # -- database part ---------------------------------------------------------------------

    def _transaction(self, work: Callable[[sa.Connection], T]) -> T:
        try:
            with self.engine.begin() as conn:
                return work(conn)
        except (sa.exc.DataError, sa.exc.IntegrityError):
            raise
        except sa.exc.DBAPIError as exc:
            first_line = str(exc.orig or exc).strip().splitlines()[0]
            raise DatabaseUnavailableError(f"PostgreSQL transaction failed: {first_line}") from exc

    def _materialize(
        self,
        conn: sa.Connection,
        prepared: PreparedBatch,
        isolate: bool,
    ) -> tuple[ApplyCounts, list[tuple[int, DeadLetter]]]:
        if not isolate:
            return self.materializer.apply(conn, prepared.changes), []
        counts, failed = self.materializer.apply_isolated(conn, prepared.changes)
        letters = []
        for change, exc in failed:
            index = prepared.sources[id(change)]
            source = prepared.records[index]
            letter = self._letter(
                "apply", exc, source, change.mapping.source_table, change.mapping.target_table
            )
            letters.append((index, letter))
        return counts, letters

    def _run(
        self,
        prepared: PreparedBatch,
        work: Callable[[sa.Connection, PreparedBatch, bool], BatchResult],
    ) -> BatchResult:
        try:
            return self._transaction(lambda conn: work(conn, prepared, False))
        except (sa.exc.DataError, sa.exc.IntegrityError) as exc:
            log.warning("batch rejected by PostgreSQL (%s); retrying change by change", exc.orig)
        try:
            return self._transaction(lambda conn: work(conn, prepared, True))
        except sa.exc.DBAPIError as exc:
            raise DatabaseUnavailableError(f"PostgreSQL rejected the batch: {exc.orig}") from exc

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

    def apply(self, batch: PreparedBatch, *, position: ShardPosition | None = None) -> BatchResult:
        """Materialize a prepared batch in one transaction (see :meth:`process`)."""
        prune = time.monotonic() >= self._next_prune
        received = len(batch.records)

        def work(conn: sa.Connection, prepared: PreparedBatch, isolate: bool) -> BatchResult:
            counts, failed = self._materialize(conn, prepared, isolate)
            letters = [letter for _, letter in sorted(prepared.poison + failed, key=_first)]
            write_dead_letters(conn, letters)
            if position is not None:
                self._record_progress(conn, position, received)
            if prune:
                self._prune(conn)
            return BatchResult(
                received, counts.upserted, counts.deleted, counts.stale, len(letters)
            )

        result = self._run(batch, work)
        if prune:
            self._next_prune = time.monotonic() + self._prune_every
        return result

    def replay(self, letters: Sequence[StoredDeadLetter]) -> BatchResult:
        """Re-run stored dead letters through the pipeline in one transaction.

        Those that now apply get ``replayed_at``; those that still fail keep their row with
        the new error. Returns the counts (``dead_lettered``: still failing).
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

    @staticmethod
    def _record_progress(conn: sa.Connection, position: ShardPosition, count: int) -> None:
        stmt = pg.insert(shard_progress).values(
            application=position.application,
            shard_id=position.shard_id,
            sequence_number=position.sequence_number,
            records_total=count,
            batches_total=1,
            millis_behind_latest=position.millis_behind_latest,
        )
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[shard_progress.c.application, shard_progress.c.shard_id],
                set_={
                    "sequence_number": stmt.excluded.sequence_number,
                    "records_total": shard_progress.c.records_total + count,
                    "batches_total": shard_progress.c.batches_total + 1,
                    "millis_behind_latest": stmt.excluded.millis_behind_latest,
                    "updated_at": sa.func.now(),
                },
            )
        )

    def _prune(self, conn: sa.Connection, now: datetime | None = None) -> int:
        now = now or datetime.now(UTC)
        cutoff = now - self.tombstone_horizon
        cutoff_us = (cutoff - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
        pruned = self.materializer.prune_tombstones(conn, cutoff_us=cutoff_us)
        if pruned:
            log.info("pruned %d tombstones older than %s", pruned, cutoff.isoformat())
        return pruned

    def prune_tombstones(self, *, now: datetime | None = None) -> int:
        """Prune tombstones older than ``now - tombstone_horizon`` in their own transaction.

        Returns:
            How many tombstones were deleted.
        """
        return self._transaction(lambda conn: self._prune(conn, now))
