"""A batch's shapes on its way through :mod:`ddbcdc.pipeline`: the raw records it takes
(:class:`SourceRecord`), the batch decoded and cleansed (:class:`PreparedBatch`) and what it
did (:class:`BatchResult`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from ddbcdc.cleanse import CleanChange
from ddbcdc.materialize import TablePlan
from ddbcdc.materialize.deadletters import DeadLetter, ReasonKey

__all__ = ["BatchResult", "PreparedBatch", "SourceRecord"]


class SourceRecord(NamedTuple):
    """One raw Kinesis record: its exact data bytes, where it came from, when it arrived in
    the stream (ApproximateArrivalTimestamp, epoch milliseconds) when known."""

    data: bytes
    shard_id: str | None = None
    sequence_number: str | None = None
    partition_key: str | None = None
    arrival_ms: int | None = None


@dataclass
class BatchResult:
    """What a batch did. ``received == upserted + deleted + stale + dead_lettered``.

    ``reasons`` counts the dead letters per (table, column, reason); ``"-"`` where a dead
    letter has no table or column. ``unmatched`` counts, per routed mapping (by its name),
    the changes of items no route but the catch-all takes (or, with no catch-all, that were
    dead-lettered for it). ``batch`` is the prepared batch that was committed (its change
    times tell how fresh the copy is, see :meth:`PreparedBatch.change_times`), and
    ``committed_at`` when the commit returned (epoch seconds).
    """

    received: int = 0
    upserted: int = 0
    deleted: int = 0
    stale: int = 0
    dead_lettered: int = 0
    reasons: dict[ReasonKey, int] = field(default_factory=dict)
    batch: PreparedBatch | None = field(default=None, repr=False, compare=False)
    committed_at: float | None = field(default=None, compare=False)
    unmatched: dict[str, int] = field(default_factory=dict)

    def add(self, other: BatchResult) -> None:
        """Add another batch's counts to these."""
        self.received += other.received
        self.upserted += other.upserted
        self.deleted += other.deleted
        self.stale += other.stale
        self.dead_lettered += other.dead_lettered
        for key, count in other.reasons.items():
            self.reasons[key] = self.reasons.get(key, 0) + count
        for name, count in other.unmatched.items():
            self.unmatched[name] = self.unmatched.get(name, 0) + count


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    """A batch decoded and cleansed, ready for :meth:`Pipeline.apply`."""

    records: Sequence[SourceRecord]
    changes: list[CleanChange]
    sources: dict[int, int]  # id(change) -> index of its SourceRecord
    poison: list[tuple[int, DeadLetter]]  # (index of the SourceRecord, dead letter)
    plan: list[TablePlan]  # the changes, collapsed and staged per table
    unmatched: dict[str, int] = field(default_factory=dict)  # per routed mapping

    def newest_us(self) -> int | None:
        """The newest change time among the batch's records that decoded."""
        times = [c.approximate_creation_us for c in self.changes]
        times += [x.version_us for _, x in self.poison if x.version_us is not None]
        return max(times) if times else None

    def newest_by_table(self) -> dict[str, int]:
        """Per target table, the newest change time of the batch's changes to it."""
        return {
            table.writer.mapping.target_table: max(c.approximate_creation_us for c in table.group)
            for table in self.plan
            if table.group
        }

    def change_times(self) -> dict[str, tuple[list[int], list[int | None]]]:
        """Per target table: its changes' change times (epoch microseconds) and their
        records' arrivals in the stream (epoch milliseconds, None when unknown)."""
        records, sources = self.records, self.sources
        return {
            table.writer.mapping.target_table: (
                [c.approximate_creation_us for c in table.group],
                [records[sources[id(c)]].arrival_ms for c in table.group],
            )
            for table in self.plan
        }
