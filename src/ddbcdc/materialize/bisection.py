"""Finding the changes PostgreSQL refuses in a routed mapping's batch, by halves in savepoints.

A routed mapping (:class:`~ddbcdc.materialize.routed.RoutedWriter`) writes a table per route
and decides in Python which rows leave a route, so :class:`~ddbcdc.materialize.isolation.
Isolation`'s statements over numbered candidates do not apply to it. Its batch is isolated
here instead, with the same outcome: groups of keys are applied in savepoints, halves of
halves, down to single keys; within a refused key, change by change from the newest until
one applies (the older ones are then logged, superseded by it). Each attempt is the routed
writer's whole batch statement, so an item that moves between routes still moves in one
attempt: it is deleted from its old table only where its new row is written.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from ddbcdc.cleanse import CleanChange
from ddbcdc.db import classify, describe
from ddbcdc.materialize.isolation import REFUSED_BELOW_FLOOR, Settled, _by_key
from ddbcdc.materialize.routed import RoutedWriter

__all__ = ["Bisection"]


def _add(total: Settled, more: Settled) -> Settled:
    total.upserted += more.upserted
    total.deleted += more.deleted
    total.failed += more.failed
    return total


class Bisection:
    """Applies one routed mapping's changes so that those PostgreSQL refuses are found and
    returned (the interface of :class:`~ddbcdc.materialize.isolation.Isolation`)."""

    def __init__(self, writer: RoutedWriter) -> None:
        self.writer = writer

    def apply(self, conn: sa.Connection, changes: Sequence[CleanChange], **_: object) -> Settled:
        """Apply ``changes`` (one mapping's, any order, duplicates allowed)."""
        self.writer.stage.ensure(conn)  # outside the savepoints, which may roll back
        keys = sorted(_by_key(changes), key=lambda g: g[0].key)
        return self._bisect(conn, keys)

    def settle(
        self, conn: sa.Connection, changes: Sequence[CleanChange], refused: Sequence[str]
    ) -> Settled:
        """The keys whose newest change was refused below the prune floor (``refused``:
        their event ids): their older changes, newest first."""
        ids = set(refused)
        settled = Settled()
        for group in _by_key(changes):
            if group[0].event_id in ids:
                _add(settled, self._settle_key(conn, group, refused_first=True))
        return settled

    def _once(self, conn: sa.Connection, keys: list[list[CleanChange]]) -> Settled:
        """The keys' changes as the fast path applies them (may raise)."""
        changes = [c for group in keys for c in group]
        newest = [group[0] for group in keys]
        outcome = self.writer.run(conn, changes if self.writer.logged else [], newest)
        settled = Settled(outcome.upserted, outcome.deleted)
        if outcome.refused:
            _add(settled, self.settle(conn, changes, outcome.refused))
        return settled

    def _bisect(self, conn: sa.Connection, keys: list[list[CleanChange]]) -> Settled:
        if not keys:
            return Settled()
        try:
            with conn.begin_nested():
                settled = self._once(conn, keys)
                self.writer.stage.clear(conn)
            return settled
        except Exception as exc:
            if classify(exc) != "poison":
                raise
            if len(keys) == 1:
                return self._settle_key(conn, keys[0], refused_first=False)
        middle = len(keys) // 2
        return _add(self._bisect(conn, keys[:middle]), self._bisect(conn, keys[middle:]))

    def _settle_key(
        self, conn: sa.Connection, ordered: list[CleanChange], *, refused_first: bool
    ) -> Settled:
        """One key's changes (newest first): fail each that fails until one applies, then
        log the older ones. ``refused_first``: the newest was refused below the floor."""
        settled = Settled()
        start = 0
        if refused_first:
            settled.failed.append((ordered[0], REFUSED_BELOW_FLOOR))
            start = 1
        for index in range(start, len(ordered)):
            change = ordered[index]
            try:
                with conn.begin_nested():
                    self.writer.stage.clear(conn)
                    outcome = self.writer.run(conn, [change], [change])
            except Exception as exc:
                if classify(exc) != "poison":
                    raise
                settled.failed.append((change, describe(exc)))
                continue
            if outcome.refused:
                settled.failed.append((change, REFUSED_BELOW_FLOOR))
                continue
            settled.upserted += outcome.upserted
            settled.deleted += outcome.deleted
            if self.writer.logged:
                settled.failed += self._log_each(conn, ordered[index + 1 :])
            break
        self.writer.stage.clear(conn)
        return settled

    def _log_each(
        self, conn: sa.Connection, changes: Sequence[CleanChange]
    ) -> list[tuple[CleanChange, str]]:
        """Log superseded changes one by one; those the log refuses are returned."""
        failed = []
        for change in changes:
            try:
                with conn.begin_nested():
                    self.writer.stage.clear(conn)
                    self.writer.run(conn, [change], [])
            except Exception as exc:
                if classify(exc) != "poison":
                    raise
                failed.append((change, describe(exc)))
        return failed
