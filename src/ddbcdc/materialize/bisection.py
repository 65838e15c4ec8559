"""Finding the changes PostgreSQL refuses in a routed mapping's batch, by halves in savepoints.

A routed mapping (:class:`~ddbcdc.materialize.routed.RoutedWriter`) writes a table per route
and decides in Python which rows leave a route, so :class:`~ddbcdc.materialize.isolation.
Isolation`'s statements over numbered candidates do not apply to it. Its batch is isolated
here instead, with the same outcome: groups of keys are applied in savepoints, halves of
halves, down to single keys; within a refused key, change by change from the newest until
one applies (the older ones are then logged, superseded by it). Each attempt is the routed
writer's whole batch statement, so an item that moves between routes still moves in one
attempt: it is deleted from its old table only where its new row is written.

Halving from the whole batch costs several attempts per refused key, each a few round trips.
So a batch of more than :data:`SCREENED` keys is **screened** first, inside PostgreSQL
(:mod:`ddbcdc.materialize.screen`), ordered by route then key (a route whose table refuses
nothing passes in long ranges): the screen names the keys whose newest change is refused
alone, as a suggestion. The writer's own statements decide, as before: the other keys are
applied in one attempt (halved as above if it is refused, e.g. by a delete or the change
log, which the screen does not run); then the suspected keys are screened again, each alone,
in one statement (a change refused alone now is refused; the rest are tried), and each is
settled change by change from the first change not refused.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from ddbcdc.cleanse import CleanChange
from ddbcdc.db import classify, describe
from ddbcdc.materialize.isolation import REFUSED_BELOW_FLOOR, Settled, _by_key
from ddbcdc.materialize.routed import RoutedWriter
from ddbcdc.materialize.screen import Screen
from ddbcdc.materialize.writer import Outcome

__all__ = ["SCREENED", "Bisection"]

#: Batches of more keys than this are screened first (smaller ones are halved at once).
SCREENED = 16


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
        self.screen = Screen(writer)

    def apply(self, conn: sa.Connection, changes: Sequence[CleanChange], **_: object) -> Settled:
        """Apply ``changes`` (one mapping's, any order, duplicates allowed)."""
        self.writer.stage.ensure(conn)  # outside the savepoints, which may roll back
        keys = sorted(_by_key(changes), key=lambda g: g[0].key)
        order = sorted(range(len(keys)), key=lambda i: str(keys[i][0].route))
        suspects = self._suspects(conn, [keys[i] for i in order]) if len(keys) > SCREENED else []
        if not suspects:
            return self._bisect(conn, keys)
        held = {order[i] for i in suspects}
        settled = self._bisect(conn, [g for i, g in enumerate(keys) if i not in held])
        refused = self.screen.refused(conn, suspects)
        self.screen.clear(conn)
        for candidate in sorted(suspects, key=order.__getitem__):
            group = keys[order[candidate]]
            reason = refused.get(candidate)
            if reason is None:
                _add(settled, self._settle_key(conn, group))
            else:
                settled.failed.append((group[0], reason))
                _add(settled, self._settle_key(conn, group, start=1))
        return settled

    def _suspects(self, conn: sa.Connection, keys: list[list[CleanChange]]) -> list[int]:
        """The positions in ``keys`` of those whose newest change the screen refuses alone;
        none when the screen cannot run on these values (a value the driver cannot send)."""
        rows = self.writer.stage.rows([group[0] for group in keys])
        try:
            with conn.begin_nested():
                self.screen.load(conn, rows)
                return self.screen.search(conn, len(keys))
        except Exception as exc:
            if classify(exc) != "poison":
                raise
            return []

    def settle(
        self, conn: sa.Connection, changes: Sequence[CleanChange], refused: Sequence[str]
    ) -> Settled:
        """The keys whose newest change was refused below the prune floor (``refused``:
        their event ids): their older changes, newest first."""
        ids = set(refused)
        settled = Settled()
        for group in _by_key(changes):
            if group[0].event_id in ids:
                settled.failed.append((group[0], REFUSED_BELOW_FLOOR))
                _add(settled, self._settle_key(conn, group, start=1))
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
                return self._settle_key(conn, keys[0])
        middle = len(keys) // 2
        return _add(self._bisect(conn, keys[:middle]), self._bisect(conn, keys[middle:]))

    def _settle_key(
        self, conn: sa.Connection, ordered: list[CleanChange], start: int = 0
    ) -> Settled:
        """One key's changes (newest first) from ``start``: fail each that fails until one
        applies, then log the older ones (with it when the log takes them all at once)."""
        settled = Settled()
        for index in range(start, len(ordered)):
            change, older = ordered[index], ordered[index + 1 :]
            outcome = None
            if self.writer.logged and older:
                outcome = self._try(conn, [change, *older], change)
            logged = outcome is not None
            if outcome is None:
                try:
                    outcome = self._try(conn, [change], change, raising=True)
                except Exception as exc:
                    if classify(exc) != "poison":
                        raise
                    settled.failed.append((change, describe(exc)))
                    continue
            assert outcome is not None
            if outcome.refused:
                settled.failed.append((change, REFUSED_BELOW_FLOOR))
                continue
            settled.upserted += outcome.upserted
            settled.deleted += outcome.deleted
            if self.writer.logged and not logged:
                settled.failed += self._log_each(conn, older)
            break
        self.writer.stage.clear(conn)
        return settled

    def _try(
        self,
        conn: sa.Connection,
        logged: list[CleanChange],
        change: CleanChange,
        *,
        raising: bool = False,
    ) -> Outcome | None:
        """``change`` applied, ``logged`` logged, in a savepoint: the outcome, or None when
        PostgreSQL refuses a value (``raising``: the error)."""
        try:
            with conn.begin_nested():
                self.writer.stage.clear(conn)
                return self.writer.run(conn, logged if self.writer.logged else [], [change])
        except Exception as exc:
            if classify(exc) != "poison" or raising:
                raise
            return None

    def _log_each(
        self, conn: sa.Connection, changes: Sequence[CleanChange]
    ) -> list[tuple[CleanChange, str]]:
        """Log superseded changes, all at once or, if the log refuses one, one by one; those
        the log refuses are returned."""
        if len(changes) > 1:
            try:
                with conn.begin_nested():
                    self.writer.run(conn, changes, [])
                return []
            except Exception as exc:
                if classify(exc) != "poison":
                    raise
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
