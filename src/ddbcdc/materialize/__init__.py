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
the changes at fault (:mod:`ddbcdc.materialize.isolation`: ranges of keys in subtransactions,
inside PostgreSQL; a routed mapping's by halves in savepoints,
:mod:`ddbcdc.materialize.bisection`), and for a key whose newest change fails it tries the
next older one: a refused newest change never takes a valid older one down with it.

Applying the same changes in any order, any number of times, in any batch split, by any
number of concurrent transactions, converges to the state of the newest change per key.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from ddbcdc.cleanse import CleanChange
from ddbcdc.materialize.bisection import Bisection
from ddbcdc.materialize.changelog import LogRow
from ddbcdc.materialize.isolation import REFUSED_BELOW_FLOOR, Isolation
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


_MAPPING_NAME = operator.attrgetter("mapping.name")


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
        self._isolations: dict[str, Isolation | Bisection] = {}

    def _groups(self, changes: Sequence[CleanChange]) -> list[tuple[Writer, list[Any]]]:
        if len(self.writers) == 1 and changes:  # the common case: one mapping, one group
            names = set(map(_MAPPING_NAME, changes))
            if len(names) == 1 and names <= self.writers.keys():
                return [(self.writers[names.pop()], list(changes))]
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
                settled = self._isolation(writer).settle(conn, group, outcome.refused)
                counts.add(ApplyCounts(settled.upserted, settled.deleted, failed=settled.failed))
            counts.stale = len(group) - counts.upserted - counts.deleted - len(counts.failed)
            total.add(counts)
        return total

    def apply_isolated(
        self,
        conn: sa.Connection,
        changes: Sequence[CleanChange],
        *,
        plan: Sequence[TablePlan] | None = None,
    ) -> ApplyCounts:
        """Like :meth:`apply`, but the changes PostgreSQL refuses are found and returned
        (:mod:`ddbcdc.materialize.isolation`; a routed mapping's by halves,
        :mod:`ddbcdc.materialize.bisection`).

        Raises:
            sqlalchemy.exc.DBAPIError (or a driver error): an error that is not a record's
                fault (connection lost, ...).
        """
        total = ApplyCounts()
        made = {table.writer.mapping.name: table for table in plan or ()}
        for writer, group in self._groups(changes):
            table = made.get(writer.mapping.name)
            documents = None
            if table is not None and table.log_rows and isinstance(writer, TableWriter):
                pairs = zip(table.logged, table.log_rows, strict=True)
                documents = {c.event_id: r[-1] for c, r in pairs}
            settled = self._isolation(writer).apply(conn, group, documents=documents)
            counts = ApplyCounts(settled.upserted, settled.deleted, failed=settled.failed)
            counts.stale = len(group) - counts.upserted - counts.deleted - len(counts.failed)
            total.add(counts)
        return total

    def _isolation(self, writer: Writer) -> Isolation | Bisection:
        found = self._isolations.get(writer.mapping.name)
        if found is None:
            made = Bisection(writer) if isinstance(writer, RoutedWriter) else Isolation(writer)
            found = self._isolations[writer.mapping.name] = made
        return found
