"""Cleansed changes -> PostgreSQL, inside the caller's transaction.

:class:`Materializer` applies a batch of any mapped tables: per table (in name order, so
concurrent batches take their locks in one order), the batch is collapsed to the newest change
per key and applied by a :class:`~ddbcdc.materialize.writer.TableWriter` over a staged COPY
(of a routed mapping: a :class:`~ddbcdc.materialize.routed.RoutedWriter`, a table per route,
the key the DynamoDB key whichever route holds the item).

Every change of a batch ends in exactly one of three ways: **applied** (it won its key),
**superseded** (a newer change of its key is applied, in this batch or before: "stale"), or
**failed** (returned to the caller, who dead-letters it). :meth:`Materializer.apply` is the
fast path; when PostgreSQL refuses a value in it, :meth:`Materializer.apply_isolated` finds
the changes at fault by bisection in savepoints, and for a key whose newest change fails it
tries the next older one: a refused newest change never takes a valid older one down with it.

Applying the same changes in any order, any number of times, in any batch split, by any
number of concurrent transactions, converges to the state of the newest change per key.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from ddbcdc.cleanse import CleanChange
from ddbcdc.db import classify, describe
from ddbcdc.materialize.changelog import LogRow
from ddbcdc.materialize.routed import RoutedWriter
from ddbcdc.materialize.staging import StageRow
from ddbcdc.materialize.writer import TableWriter
from ddbcdc.schema.mapping import TableMapping
from ddbcdc.schema.tables import mapped_tables

__all__ = [
    "REFUSED_BELOW_FLOOR",
    "ApplyCounts",
    "Materializer",
    "TablePlan",
    "TableWriter",
    "Writer",
    "collapse",
]

#: Why a change at or below the prune floor on a key without a versions row is not applied.
REFUSED_BELOW_FLOOR = (
    "change is older than the tombstone prune floor of its table and its key has no version: "
    "a delete pruned since may be newer, so it is not applied"
)

Slot = tuple[str, tuple[Any, ...]]
#: The writer of a mapping: a plain one's, or a routed one's (a table per route).
Writer = TableWriter | RoutedWriter


@dataclass(frozen=True, slots=True)
class TablePlan:
    """One table's part of a batch, ready for the database (see :meth:`Materializer.plan`)."""

    writer: Writer
    group: list[CleanChange]
    logged: list[CleanChange]
    newest: list[CleanChange]
    rows: list[StageRow]
    log_rows: list[LogRow]


@dataclass
class ApplyCounts:
    """What a batch did. ``upserted + deleted + stale + len(failed)`` is every change.

    Attributes:
        upserted: live rows written.
        deleted: keys whose REMOVE won.
        stale: changes superseded by a newer change of their key.
        failed: changes not applied, each with a reason naming no value.
    """

    upserted: int = 0
    deleted: int = 0
    stale: int = 0
    failed: list[tuple[CleanChange, str]] = field(default_factory=list)

    def add(self, other: ApplyCounts) -> None:
        """Add another batch's counts to these."""
        self.upserted += other.upserted
        self.deleted += other.deleted
        self.stale += other.stale
        self.failed += other.failed


def collapse(changes: Iterable[CleanChange]) -> list[CleanChange]:
    """The newest change per (mapping, key); input order and duplicates do not matter."""
    newest: dict[Slot, CleanChange] = {}
    for change in changes:
        slot = (change.mapping.name, change.key)
        held = newest.get(slot)
        if held is None or held.version < change.version:
            newest[slot] = change
    return list(newest.values())


def _collapse_keys(changes: Iterable[CleanChange]) -> list[CleanChange]:
    """:func:`collapse` of changes of one mapping (by key alone)."""
    newest: dict[tuple[Any, ...], CleanChange] = {}
    get = newest.get
    for change in changes:
        key = change.key
        held = get(key)
        if held is None or held.version < change.version:
            newest[key] = change
    return list(newest.values())


def _distinct(changes: Iterable[CleanChange]) -> list[CleanChange]:
    return list({c.event_id: c for c in changes}.values())


def _by_key(changes: Iterable[CleanChange]) -> dict[Slot, list[CleanChange]]:
    groups: dict[Slot, list[CleanChange]] = {}
    for change in changes:
        groups.setdefault((change.mapping.name, change.key), []).append(change)
    return groups


class Materializer:
    """Applies cleansed changes of any mapped table inside a caller's transaction.

    Args:
        mappings: the table mappings.
        metadata: where to build their tables (a fresh MetaData when None).
        sweep: see :class:`~ddbcdc.materialize.routed.RoutedWriter`.
    """

    def __init__(
        self,
        mappings: Sequence[TableMapping],
        *,
        metadata: sa.MetaData | None = None,
        sweep: bool = False,
    ) -> None:
        self.tables = mapped_tables(mappings, metadata)
        self.writers: dict[str, Writer] = {
            name: RoutedWriter(t, sweep=sweep) if t.routes else TableWriter(t)
            for name, t in self.tables.items()
        }

    def _groups(self, changes: Sequence[CleanChange]) -> list[tuple[Writer, list[Any]]]:
        by_mapping: dict[str, list[CleanChange]] = {}
        for change in changes:
            by_mapping.setdefault(change.mapping.name, []).append(change)
        writers = [(self.writers[name], group) for name, group in by_mapping.items()]
        return sorted(writers, key=lambda pair: pair[0].mapping.target_table)

    def plan(self, changes: Sequence[CleanChange]) -> list[TablePlan]:
        """Everything of :meth:`apply` that needs no database: per table, in lock order, the
        changes to log and their log rows, the newest per key and their stage rows (pure;
        any thread)."""
        plans = []
        for writer, group in self._groups(changes):
            logged = _distinct(group) if writer.logged else []
            newest = _collapse_keys(group)
            log_rows = writer.log.rows(logged) if writer.log is not None else []
            stage_rows = writer.stage.rows(newest)
            plans.append(TablePlan(writer, group, logged, newest, stage_rows, log_rows))
        return plans

    def apply(
        self,
        conn: sa.Connection,
        changes: Sequence[CleanChange],
        *,
        plan: Sequence[TablePlan] | None = None,
    ) -> ApplyCounts:
        """Log, collapse and apply ``changes`` (any order, duplicates allowed).

        Args:
            conn: a connection in a transaction.
            changes: the batch.
            plan: :meth:`plan` of the same changes, when made beforehand.

        Raises:
            sqlalchemy.exc.DBAPIError (or a driver error): PostgreSQL refused the batch;
                the transaction is unusable (see :meth:`apply_isolated`).
        """
        total = ApplyCounts()
        for table in plan if plan is not None else self.plan(changes):
            writer, group = table.writer, table.group
            outcome = writer.run(
                conn, table.logged, table.newest, rows=table.rows, log_rows=table.log_rows
            )
            counts = ApplyCounts(outcome.upserted, outcome.deleted)
            if outcome.refused:
                counts.add(self._settle_refused(conn, writer, group, table.newest, outcome.refused))
            counts.stale = len(group) - counts.upserted - counts.deleted - len(counts.failed)
            total.add(counts)
        return total

    def _settle_refused(
        self,
        conn: sa.Connection,
        writer: Writer,
        group: list[CleanChange],
        newest: list[CleanChange],
        refused: list[str],
    ) -> ApplyCounts:
        """The keys whose newest change was refused: their older changes, one by one."""
        counts = ApplyCounts()
        ids = set(refused)
        groups = _by_key(group)
        for change in newest:
            if change.event_id in ids:
                key_changes = groups[(change.mapping.name, change.key)]
                counts.add(self._settle_key(conn, writer, key_changes, refused_first=True))
        return counts

    def apply_isolated(self, conn: sa.Connection, changes: Sequence[CleanChange]) -> ApplyCounts:
        """Like :meth:`apply`, but the changes PostgreSQL refuses are found and returned.

        Key groups are applied in savepoints, halves of halves, down to single keys; within
        a refused key, change by change from the newest.

        Raises:
            sqlalchemy.exc.DBAPIError (or a driver error): an error that is not a record's
                fault (connection lost, ...).
        """
        total = ApplyCounts()
        for writer, group in self._groups(changes):
            writer.stage.ensure(conn)  # outside the savepoints, which may roll back
            keys = [g for _, g in sorted(_by_key(group).items(), key=lambda kv: kv[0][1])]
            counts = self._bisect(conn, writer, keys)
            counts.stale = len(group) - counts.upserted - counts.deleted - len(counts.failed)
            total.add(counts)
        return total

    def _bisect(
        self, conn: sa.Connection, writer: Writer, keys: list[list[CleanChange]]
    ) -> ApplyCounts:
        changes = [c for key in keys for c in key]
        try:
            with conn.begin_nested():
                counts = self.apply(conn, changes)
                writer.stage.clear(conn)
            return counts
        except Exception as exc:
            if classify(exc) != "poison":
                raise
            if len(keys) == 1:
                return self._settle_key(conn, writer, keys[0], refused_first=False)
        middle = len(keys) // 2
        counts = self._bisect(conn, writer, keys[:middle])
        counts.add(self._bisect(conn, writer, keys[middle:]))
        return counts

    def _settle_key(
        self,
        conn: sa.Connection,
        writer: Writer,
        changes: list[CleanChange],
        *,
        refused_first: bool,
    ) -> ApplyCounts:
        """One key's changes, newest first: fail each that fails until one applies, then
        log the older ones (superseded by it). ``refused_first``: the newest was refused."""
        ordered = sorted(_distinct(changes), key=lambda c: c.version, reverse=True)
        counts = ApplyCounts()
        start = 0
        if refused_first:
            counts.failed.append((ordered[0], REFUSED_BELOW_FLOOR))
            start = 1
        for index in range(start, len(ordered)):
            change = ordered[index]
            try:
                with conn.begin_nested():
                    writer.stage.clear(conn)
                    outcome = writer.run(conn, [change], [change])
            except Exception as exc:
                if classify(exc) != "poison":
                    raise
                counts.failed.append((change, describe(exc)))
                continue
            if outcome.refused:
                counts.failed.append((change, REFUSED_BELOW_FLOOR))
                continue
            counts.upserted += outcome.upserted
            counts.deleted += outcome.deleted
            if writer.logged:
                counts.failed += self._log_each(conn, writer, ordered[index + 1 :])
            break
        writer.stage.clear(conn)
        return counts

    def _log_each(
        self, conn: sa.Connection, writer: Writer, changes: Sequence[CleanChange]
    ) -> list[tuple[CleanChange, str]]:
        """Log superseded changes one by one; those the log refuses are returned."""
        failed = []
        for change in changes:
            try:
                with conn.begin_nested():
                    writer.stage.clear(conn)
                    writer.run(conn, [change], [])
            except Exception as exc:
                if classify(exc) != "poison":
                    raise
                failed.append((change, describe(exc)))
        return failed
