"""The one comparison over a routed mapping: an item against the row of its route.

A routed mapping's copy is equal to the table when every item is in the table of the route
it matches (the catch-all for the unmatched ones), with the row that route's cleansing gives,
and no table holds a row of another key or a second row of one. :class:`RoutedRows` is
:class:`~ddbcdc.verify.rows.Rows` keyed by the DynamoDB key: an item's row carries its route
(``_route``), a key's live row is looked up in every route's table by its key there (a key
found in two tables is a row that differs from any item), and each row read from a route's
table is given its DynamoDB key back by writing its key templates out. So ``ddbcdc verify``
(scan, re-check, repair) and the in-memory comparison work per route unchanged.

:func:`describe` is the factory of both: the comparison of any mapping.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from ddbcdc.cleanse.routes import RoutedCleanser
from ddbcdc.decode.itemjson import comparable
from ddbcdc.errors import PoisonRecordError
from ddbcdc.schema.mapping import TableMapping
from ddbcdc.schema.tables import MappedTables
from ddbcdc.verify.rows import Key, Row, Rows, jsonb_columns, key_types, parse_jsonb

__all__ = ["ROUTE", "RoutedRows", "describe", "rows_for"]

#: The member of a routed row naming the route table it is (or belongs) in.
ROUTE = "_route"
_PER_QUERY = 5000


class _Route:
    """One route's table as verify reads it."""

    def __init__(self, tables: MappedTables) -> None:
        self.tables = tables
        self.name = tables.live.name
        self.names = list(tables.mapping.stored_columns)
        self.key = list(tables.mapping.key)
        self.jsonb = jsonb_columns(tables.live, self.names)

    def columns(self) -> list[sa.ColumnElement[Any]]:
        live = self.tables.live
        return [
            sa.cast(live.c[n], sa.Text).label(n) if n in self.jsonb else live.c[n]
            for n in self.names
        ]


class RoutedRows(Rows):
    """:class:`~ddbcdc.verify.rows.Rows` of a routed mapping (see the module doc)."""

    def __init__(self, mapping: TableMapping, key_types: Mapping[str, str] | None = None) -> None:
        super().__init__(mapping, key_types)
        assert isinstance(self.cleanser, RoutedCleanser)
        self.router: RoutedCleanser = self.cleanser
        self.routes = {r.live.name: _Route(r) for r in self.tables.routes}
        self._order = list(self.routes)

    def row(self, item: Mapping[str, Any]) -> tuple[Key | None, Row | None]:
        """(DynamoDB key, the row of the item's route, ``_route`` naming it)."""
        try:
            change = self._cleanse(self.maker.put(item, version_us=0, event_id="verify").data)
        except PoisonRecordError:
            return super().row(item)  # the key alone, or nothing
        assert change.row is not None and change.route is not None
        route = self.routes[change.route]
        row: Row = {ROUTE: change.route, **{n: change.row[n] for n in route.names}}
        return change.key, self._parse(row)

    def _parse(self, row: Row) -> Row:
        return parse_jsonb(row, self.routes[row[ROUTE]].jsonb)

    def comparable(self, row: Row) -> Row:
        """``row`` as compared: its route's ``jsonb`` values by what they hold."""
        out = dict(row)
        route = self.routes.get(out.get(ROUTE, ""))
        for name in route.jsonb if route is not None else ():
            if out[name] is not None:
                out[name] = comparable(out[name])
        return out

    def _route_keys(self, keys: Sequence[Key]) -> dict[str, dict[Key, Key]]:
        """Per route, the key there of each of ``keys`` its templates take -> the key."""
        out: dict[str, dict[Key, Key]] = {name: {} for name in self._order}
        for key in keys:
            attributes = dict(zip(self.sources, key, strict=True))
            for name, found in zip(self._order, self.router.route_keys(attributes), strict=True):
                if found is not None:
                    out[name][found] = key
        return out

    def fetch(self, conn: sa.Connection, keys: Sequence[Key]) -> dict[Key, tuple[Row, int]]:
        """The live rows of ``keys`` (DynamoDB keys), in whichever route's table."""
        out: dict[Key, tuple[Row, int]] = {}
        for name, wanted in self._route_keys(keys).items():
            route = self.routes[name]
            live = route.tables.live
            found = list(wanted)
            for start in range(0, len(found), _PER_QUERY):
                part = found[start : start + _PER_QUERY]
                match = sa.tuple_(*[live.c[k] for k in route.key]).in_(part)
                query = sa.select(*route.columns(), live.c._ddbcdc_version_us).where(match)
                for result in conn.execute(query):
                    row = self._live(route, tuple(result[:-1]))
                    key = wanted[tuple(row[k] for k in route.key)]
                    if key in out:  # a key with rows in two tables: equal to no item
                        row = {ROUTE: f"{out[key][0][ROUTE]}+{name}"}
                    out[key] = (row, int(result[-1]))
        return out

    def _live(self, route: _Route, values: Sequence[Any]) -> Row:
        return self._parse({ROUTE: route.name, **dict(zip(route.names, values, strict=True))})

    def live_rows(self, conn: sa.Connection) -> Iterator[tuple[Key, Row]]:
        """Every live row of every route's table, by DynamoDB key."""
        for name, route in self.routes.items():
            for result in conn.execute(sa.select(*route.columns())):
                row = self._live(route, tuple(result))
                yield self.router.source_key(name, tuple(row[k] for k in route.key)), row

    def live_keys(self, conn: sa.Connection) -> Iterator[list[Key]]:
        """The DynamoDB keys of every route's rows, a page of keys at a time (each page read
        whole before it is handed out: the connection is free in between)."""
        for name, route in self.routes.items():
            columns = [route.tables.live.c[k] for k in route.key]
            last: Key | None = None
            while True:
                query = sa.select(*columns).order_by(*columns).limit(_PER_QUERY)
                if last is not None:
                    query = query.where(sa.tuple_(*columns) > sa.tuple_(*last))
                page = [tuple(r) for r in conn.execute(query)]
                if not page:
                    break
                last = page[-1]
                yield [self.router.source_key(name, key) for key in page]


def rows_for(mapping: TableMapping, key_types: Mapping[str, str] | None = None) -> Rows:
    """The comparison of ``mapping``: routed or plain."""
    return RoutedRows(mapping, key_types) if mapping.routes else Rows(mapping, key_types)


def describe(client: Any, mapping: TableMapping) -> tuple[Rows, int | None]:
    """The comparison of ``mapping``'s table (its key from DescribeTable) and the table's
    approximate item count."""
    types, count = key_types(client, mapping)
    return rows_for(mapping, types), count
