"""The statements that apply one staged batch of a routed mapping (one DynamoDB table, a
table per route).

The version rule is the plain one (:mod:`ddbcdc.materialize.writer`), per DynamoDB key:
``ddbcdc_versions__<name>`` has one row per key, whichever route's table holds the item, and
that row also names the route holding the live row (``_ddbcdc_route``; NULL when none). The
invariant: **a key's live row is in the table its versions row names, and in no other**.
Per batch, after one COPY of the batch into one stage (per change: the DynamoDB key, the
columns of every route, filled for its route and, for a sweep, where the key matches another
route's templates, that route's key; the version, the op, the route):

1. **arbitrate and upsert** (one statement): the newest change of each key claims its
   versions row as for a plain mapping, in key order, and also sets the route it goes to,
   keeping the route it replaces (``_ddbcdc_prev_route``). The keys won are upserted into
   their route's table, each route's rows in its own part of the statement (a part only
   for the routes the batch's rows go to: the statement is built once per set of routes,
   and touches no other route's table). It returns the keys won whose live row leaves a
   route (a REMOVE's, or a move's), with that route: the one their versions row named
   before the claim, read under the row's lock.
2. **delete** (when keys leave): from the table of each route keys leave, their rows,
   each found by its key in that route (which the change carries). A statement of its own,
   after step 1 holds the keys' locks, so it sees a row a concurrent writer committed
   meanwhile. So an item whose entity attribute changes moves in one transaction, and a
   REMOVE, which carries only the key, deletes from the table that holds the item whatever
   the stream's view type.
3. **log**: each route with a change log gets the changes of its items: an INSERT or MODIFY
   by its route; a REMOVE by the route its record names, else by the route its key's
   versions row names as the batch applies it (the route it deleted from when it won; when
   a newer change of the key was applied before it, that change's route), else by the
   first route whose templates take its key; one no route's log holds yet (another writer
   may have logged it by another route: the key's versions row, locked, orders them).

The prune floor and its refusals are the plain mapping's, per DynamoDB key.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from ddbcdc.cleanse import CleanChange
from ddbcdc.materialize.changelog import LogRow
from ddbcdc.materialize.routed_log import RoutedLog
from ddbcdc.materialize.routed_stage import RoutedStage
from ddbcdc.materialize.staging import StageRow
from ddbcdc.materialize.writer import (
    LiveWriter,
    Outcome,
    claim,
    floor_of,
    key_match,
    refused_where,
)
from ddbcdc.schema.tables import VERSION_COLUMNS, MappedTables

__all__ = ["RoutedWriter"]

log = logging.getLogger(__name__)

_ROUTE = operator.itemgetter(-1)  # a stage row's route (the last column)
_KEY = operator.attrgetter("key")


def _total(parts: Sequence[sa.CTE]) -> sa.Select[Any]:
    """How many rows the deleting CTEs ``parts`` deleted."""
    total = sum(
        (sa.select(sa.func.count()).select_from(p).scalar_subquery() for p in parts),
        sa.literal(0),
    )
    return sa.select(total.label("deleted"))


class RoutedWriter:
    """Prepared statements of a routed mapping over its stage; :meth:`run` applies a batch
    (the interface of :class:`~ddbcdc.materialize.writer.TableWriter`).

    Args:
        tables: the mapping's tables.
        sweep: run step 2 for every batch, not only when a change moved or removed a row:
            rows that drift put in a table the versions row does not name go too (repairs).
    """

    def __init__(self, tables: MappedTables, *, sweep: bool = False) -> None:
        self.tables = tables
        self.sweep = sweep
        self.mapping = tables.mapping
        self.stage = RoutedStage(tables, every_key=sweep)
        self.targets = [LiveWriter(r) for r in tables.routes]
        self._key = list(self.mapping.key)
        self._floor = floor_of(self.mapping.target_table)
        self._index = {t.live.name: i for i, t in enumerate(self.targets)}
        self._all = tuple(range(len(self.targets)))
        self._arbiters: dict[tuple[int, ...], sa.Select[Any]] = {}
        self._gones: dict[tuple[int, ...], sa.Select[Any]] = {}
        self._sweeper = self._sweep(self.stage.table) if sweep else None
        logged = any(r.changes is not None for r in tables.routes)
        self.log = RoutedLog(tables) if logged else None

    def _upserts(self, source: sa.FromClause, won: sa.CTE, routes: Sequence[int]) -> list[sa.CTE]:
        """Per route of ``routes`` (indexes), its won keys' rows upserted into its table."""
        s = source
        out = []
        for i in routes:
            target = self.targets[i]
            columns = self.stage.columns[i]
            name = target.live.name
            values = [target.staged(s.c[columns[n]], n) for n in target.columns]
            values += [s.c[n] for n in VERSION_COLUMNS]
            rows = (
                sa.select(*values)
                .select_from(s.join(won, key_match(s, won, self._key)))
                .where(won.c._ddbcdc_route == name)
            )
            out.append(target.upsert(rows, f"upserted_{i}"))
        return out

    def arbiter(self, source: sa.FromClause, routes: Sequence[int] | None = None) -> sa.Select[Any]:
        """Step 1 over ``source`` (the stage), with an upsert part for each route of
        ``routes`` (indexes; all when None: a route none of the batch's rows goes to writes
        nothing): (deleted, upserted, refused ids, then the keys won whose live row leaves a
        route: the route, then each key column, arrays). ``won`` is read once for the
        deleted count and the leaving keys."""
        s, ver = source, self.tables.versions
        won = claim(s, ver, self._key, self._floor, routed=True)
        upserts = self._upserts(s, won, self._all if routes is None else routes)
        refused = sa.select(sa.func.array_agg(s.c._ddbcdc_event_id)).where(
            refused_where(ver, s, self._key, self._floor)
        )
        prev = won.c._ddbcdc_prev_route
        leaving = sa.and_(prev.is_not(None), prev.is_distinct_from(won.c._ddbcdc_route))
        summary = sa.select(
            sa.func.count().filter(won.c._ddbcdc_deleted).label("deleted"),
            *[
                sa.func.array_agg(column).filter(leaving).label(f"left_{i}")
                for i, column in enumerate((prev, *[won.c[k] for k in self._key]))
            ],
        ).subquery("summary")
        count = sa.func.count()
        upserted = sum(
            (sa.select(count).select_from(u).scalar_subquery() for u in upserts), sa.literal(0)
        )
        return sa.select(
            summary.c.deleted,
            upserted.label("upserted"),
            refused.scalar_subquery().label("refused"),
            *[c for c in summary.c if c.name != "deleted"],
        ).select_from(summary)

    def _arbiter(self, rows: Sequence[StageRow]) -> sa.Select[Any]:
        """Step 1 for a batch staged as ``rows``: its upsert parts only for the routes its
        rows go to (one statement per set of routes, built once)."""
        used = set(map(_ROUTE, rows))  # the stage row's route: None for a REMOVE
        routes = tuple(i for i, t in enumerate(self.targets) if t.live.name in used)
        made = self._arbiters.get(routes)
        if made is None:
            made = self._arbiters[routes] = self.arbiter(self.stage.table, routes)
        return made

    def _gone(self, routes: tuple[int, ...]) -> sa.Select[Any]:
        """Step 2: from the table of each route of ``routes`` (indexes), the rows of the keys
        given (per route, its key columns as arrays: ``r<i>_<column>``); built once per set
        of routes."""
        made = self._gones.get(routes)
        if made is not None:
            return made
        parts = []
        for i in routes:
            target = self.targets[i]
            live = target.live
            arrays = [
                sa.cast(sa.bindparam(f"r{i}_{k}"), pg.ARRAY(live.c[k].type)) for k in target.key
            ]
            given = sa.func.unnest(*arrays).table_valued(*target.key).render_derived()
            gone = target.delete(*[live.c[k] == given.c[k] for k in target.key])
            parts.append(gone.returning(sa.literal(1)).cte(f"deleted_{i}"))
        made = self._gones[routes] = _total(parts)
        return made

    def _sweep(self, source: sa.FromClause) -> sa.Select[Any]:
        """Step 2 of a sweep: every route's rows of the batch's keys whose versions row names
        another route now (or none)."""
        s, ver = source, self.tables.versions
        parts = []
        for i, target in enumerate(self.targets):
            columns, name, live = self.stage.columns[i], target.live.name, target.live
            gone = target.delete(
                *[live.c[k] == s.c[columns[k]] for k in target.key],
                key_match(ver, s, self._key),
                ver.c._ddbcdc_route.is_distinct_from(name),
                sa.or_(s.c._ddbcdc_op == "REMOVE", s.c._ddbcdc_route.is_distinct_from(name)),
            )
            parts.append(gone.returning(sa.literal(1)).cte(f"deleted_{i}"))
        return _total(parts)

    def _leaving(
        self, newest: Sequence[CleanChange], routes: Sequence[str], keys: Sequence[Sequence[Any]]
    ) -> tuple[tuple[int, ...], dict[str, list[Any]]]:
        """The routes (indexes) some key leaves and the parameters of :meth:`_gone`: each
        leaving key's key in the route it leaves (the change carries it)."""
        by_key = dict(zip(map(_KEY, newest), newest, strict=True))
        found: list[list[tuple[Any, ...]]] = [[] for _ in self.targets]
        for route, key in zip(routes, zip(*keys, strict=True), strict=True):
            index = self._index.get(route)
            if index is None:  # a route since removed: its table is gone
                continue
            change = by_key[key]
            there = change.route_keys[index]
            if there is not None:
                found[index].append(there)
                continue
            # Its versions row names a route whose templates cannot hold this key (the
            # bookkeeping was changed by hand): the row may be in any route that can.
            log.warning(
                "a versions row of %s names route %s, whose key templates do not take its "
                "key; deleting the key from every other route that can hold it",
                self.tables.mapping.source_table,
                route,
            )
            kept = change.route if change.row is not None else None  # where it is written
            for i, other in enumerate(change.route_keys):
                if other is not None and self.targets[i].live.name != kept:
                    found[i].append(other)
        params: dict[str, list[Any]] = {}
        left = tuple(i for i in self._all if found[i])
        for i in left:
            names, columns = self.targets[i].key, zip(*found[i], strict=True)
            params.update({f"r{i}_{k}": list(c) for k, c in zip(names, columns, strict=True)})
        return left, params

    @property
    def logged(self) -> bool:
        """Whether a route keeps a change log."""
        return self.log is not None

    def run(
        self,
        conn: sa.Connection,
        logged: Sequence[CleanChange],
        newest: Sequence[CleanChange],
        *,
        rows: Sequence[StageRow] | None = None,
        log_rows: Sequence[LogRow] | None = None,
    ) -> Outcome:
        """Stage and apply, as :meth:`ddbcdc.materialize.writer.TableWriter.run` does."""
        outcome = Outcome()
        if newest:
            self.stage.ensure(conn)
            if rows is None:
                rows = self.stage.rows(newest)
            self.stage.copy(conn, rows)
            arbiter = self._arbiter(rows)
            deleted, upserted, refused, routes, *keys = conn.execute(arbiter).one()
            outcome = Outcome(upserted, deleted, list(refused or ()))
            if self._sweeper is not None:
                conn.execute(self._sweeper)
            elif routes:  # some key left a route: a REMOVE's, or a move's
                left, params = self._leaving(newest, routes, keys)
                if left:
                    conn.execute(self._gone(left), params)
        if self.log is not None and logged:
            if log_rows is None:
                log_rows = self.log.rows(logged)
            if outcome.refused:
                refused_ids = set(outcome.refused)
                held = {c.key for c in newest if c.event_id in refused_ids}
                log_rows = [r for c, r in zip(logged, log_rows, strict=True) if c.key not in held]
            self.log.write(conn, log_rows)
        return outcome
