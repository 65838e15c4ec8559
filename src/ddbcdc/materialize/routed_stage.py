"""The stage of a routed mapping's batch (:mod:`ddbcdc.materialize.routed`): one row per key,
its DynamoDB key, every route's stored columns side by side (filled for the route its change
goes to and, for a sweep, each route's key where the key matches that route's templates), the
version, the op and the route. One binary COPY, as a plain mapping's
(:mod:`ddbcdc.materialize.staging`).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

from ddbcdc.cleanse import CleanChange
from ddbcdc.materialize.staging import (
    StageRow,
    binary_types,
    copy_rows,
    copy_statement,
    ensure_temp,
    stage_type,
    temp_table,
)
from ddbcdc.schema.tables import MappedTables

__all__ = ["RoutedStage"]


def _taker(names: Sequence[str]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    take = operator.itemgetter(*names)
    if len(names) > 1:
        return take

    def one(row: dict[str, Any]) -> tuple[Any, ...]:
        return (take(row),)

    return one


def _column(route: int, index: int) -> str:
    return f"_ddbcdc_r{route}_{index}"


class RoutedStage:
    """The stage of a routed mapping: one row per key, every route's columns side by side."""

    def __init__(self, tables: MappedTables, *, every_key: bool = False) -> None:
        mapping = tables.mapping
        self._key = list(mapping.key)
        #: Stage each change's key in every route that could hold it (a sweep's step 2
        #: reads them), not only its row in its own route.
        self.every_key = every_key
        columns = [
            sa.Column(c.name, stage_type(tables.versions.c[c.name].type))
            for c in mapping.key_columns
        ]
        #: Per route, the stage column of each of its stored columns.
        self.columns: list[dict[str, str]] = []
        self._keys: list[list[int]] = []  # per route, the positions of its key among its columns
        self._takes: list[Callable[[dict[str, Any]], tuple[Any, ...]]] = []
        self._offsets: list[int] = []
        self._routes = {r.mapping.target_table: i for i, r in enumerate(tables.routes)}
        width = 0
        for i, route in enumerate(tables.routes):
            names = route.mapping.stored_columns
            self.columns.append({n: _column(i, j) for j, n in enumerate(names)})
            columns += [
                sa.Column(_column(i, j), stage_type(route.live.c[n].type))
                for j, n in enumerate(names)
            ]
            self._keys.append([names.index(k) for k in route.mapping.key])
            self._takes.append(_taker(names))
            self._offsets.append(width)
            width += len(names)
        self._width = width
        self._empty = (None,) * width
        #: Per route's table: the empty columns before its own, how to take its own from a
        #: row, the empty columns after.
        self._parts = {
            target: (
                (None,) * self._offsets[i],
                self._takes[i],
                (None,) * (width - self._offsets[i] - len(tables.routes[i].mapping.stored_columns)),
            )
            for target, i in self._routes.items()
        }
        columns += [
            sa.Column("_ddbcdc_version_us", sa.BigInteger),
            sa.Column("_ddbcdc_sequence", sa.Numeric),
            sa.Column("_ddbcdc_event_id", sa.Text),
            sa.Column("_ddbcdc_op", sa.Text),
            sa.Column("_ddbcdc_route", sa.Text),
        ]
        self.table = temp_table(f"ddbcdc_stage__{mapping.target_table}", columns)
        self._types = binary_types(self.table)
        self._copy_sql = copy_statement(self.table, binary=self._types is not None)

    def ensure(self, conn: sa.Connection) -> None:
        """Create the stage on this connection unless it already has it."""
        ensure_temp(conn, self.table)

    def clear(self, conn: sa.Connection) -> None:
        """Empty the stage inside the transaction."""
        self.ensure(conn)
        conn.execute(sa.delete(self.table))

    def rows(self, newest: Sequence[CleanChange]) -> list[StageRow]:
        """Stage rows of the newest change of each key."""
        if self.every_key:
            return self._rows_every_key(newest)
        out: list[StageRow] = []
        append = out.append
        parts, empty = self._parts, self._empty
        for change in newest:
            row = change.row
            if row is None:
                append(
                    (
                        *change.key,
                        *empty,
                        change.approximate_creation_us,
                        change.sequence,
                        change.event_id,
                        change.event_name,
                        None,
                    )
                )
                continue
            before, take, after = parts[change.route]  # type: ignore[index]
            append(
                (
                    *change.key,
                    *before,
                    *take(row),
                    *after,
                    change.approximate_creation_us,
                    change.sequence,
                    change.event_id,
                    change.event_name,
                    change.route,
                )
            )
        return out

    def _rows_every_key(self, newest: Sequence[CleanChange]) -> list[StageRow]:
        """:meth:`rows` with each change's key in every route whose templates take it."""
        out: list[StageRow] = []
        offsets, keys, takes, routes = self._offsets, self._keys, self._takes, self._routes
        for change in newest:
            values: list[Any] = [None] * self._width
            for i, key in enumerate(change.route_keys):
                if key is not None:
                    at = offsets[i]
                    for position, value in zip(keys[i], key, strict=True):
                        values[at + position] = value
            row, route = change.row, None
            if row is not None:
                route = change.route
                i = routes[route]  # type: ignore[index]
                part = takes[i](row)
                values[offsets[i] : offsets[i] + len(part)] = part
            out.append(
                (
                    *change.key,
                    *values,
                    change.approximate_creation_us,
                    change.sequence,
                    change.event_id,
                    change.event_name,
                    route,
                )
            )
        return out

    def copy(self, conn: sa.Connection, rows: Sequence[StageRow]) -> None:
        """COPY ``rows`` into the stage."""
        copy_rows(conn, self._copy_sql, rows, self._types)
