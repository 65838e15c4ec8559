"""The one comparison of a DynamoDB item with its PostgreSQL row, over every stored column.

An item is turned into the row the worker writes for it: a synthesized INSERT (the records
of :mod:`ddbcdc.backfill.records`) decoded and cleansed through the table's mapping, so
its mapped columns and its kept ones (the unmapped attributes, the whole item: every name
of :attr:`~ddbcdc.schema.mapping.TableMapping.stored_columns`). A live row is read back
with the same columns, ``jsonb`` ones as their text. On both sides ``jsonb`` text is parsed
with every digit (numbers as int or Decimal, never float).

Two rows are equal (:meth:`Rows.same`) when every column is: ``jsonb`` values by what they
hold (:func:`ddbcdc.decode.itemjson.comparable`: numbers by value, never a number equal to a
boolean, maps in any order), the others as PostgreSQL returns them. ``ddbcdc verify``
(:mod:`ddbcdc.verify.run`, :mod:`ddbcdc.verify.recheck`) and the in-memory comparison
(:mod:`ddbcdc.verify.compare`: the demo, the tests) both compare through this class, so they
give one answer.

An item the mapping cannot hold (the worker dead-letters it) has no row: it is neither
missing nor different. A row the mapping keeps for an item that is gone (soft-deleted, or
kept after a TTL expiry: :meth:`ddbcdc.schema.tables.MappedTables.current`) is no live row:
DynamoDB no longer holding its item is no drift, and an item DynamoDB holds again is missing
until a newer INSERT brings the row back. A live item's row is unmarked: where the versions
row tells a live row (TTL expiries kept), ``_ddbcdc_deleted_at`` is compared too. Pure but for
the methods that take a connection.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from ddbcdc.backfill.records import RecordMaker
from ddbcdc.cleanse import Cleanser
from ddbcdc.cleanse.routes import RoutedCleanser, cleanser_for
from ddbcdc.decode.itemjson import comparable
from ddbcdc.decode.record import decode_record
from ddbcdc.errors import PoisonRecordError
from ddbcdc.schema.mapping import TableMapping, check_table_key
from ddbcdc.schema.tables import DELETED_AT, MappedTables, mapped_tables

__all__ = [
    "Key",
    "Row",
    "Rows",
    "dynamodb_key",
    "jsonb_columns",
    "key_types",
    "parse_jsonb",
]

Key = tuple[Any, ...]
Row = dict[str, Any]
#: Keys per SELECT (a page of small items can hold more keys than one statement may bind).
_PER_QUERY = 5000


class Rows:
    """Item -> row, live row and key conversions of one mapping, and their comparison.

    Args:
        mapping: the table mapping.
        key_types: the DynamoDB key attributes and their types (``S``, ``N``, ``B``) from
            DescribeTable: they must be the mapping's key sources. None: taken from the
            mapping, and :meth:`dynamodb_key` is not available.

    Raises:
        ConfigurationError: the mapping's key is not the table's key.
    """

    def __init__(self, mapping: TableMapping, key_types: Mapping[str, str] | None = None) -> None:
        self.mapping = mapping
        self.tables: MappedTables = mapped_tables([mapping])[mapping.name]
        self.names = list(mapping.stored_columns)
        #: A live item's row is unmarked: compared too where the versions row, not the mark,
        #: tells a live row (soft deletes with TTL expiries kept).
        self.mark = DELETED_AT if mapping.policy.marks and not mapping.routes else None
        self.key = list(mapping.key)
        self.sources = [c.source for c in mapping.key_columns]
        if key_types is not None:
            check_table_key(mapping, key_types, needs="verify")
        self.types = dict(key_types) if key_types is not None else None
        self.maker = RecordMaker(mapping, self.sources)
        self.cleanser: Cleanser | RoutedCleanser = cleanser_for(mapping)
        self.jsonb = [] if mapping.routes else jsonb_columns(self.tables.live, self.names)
        #: The types of the key columns (the temporary tables of a run are keyed so).
        self.key_types = {k: self.tables.versions.c[k].type for k in self.key}
        #: Where a row of the live table is a live item (None: every row is; routes delete
        #: hard).
        self.current = None if mapping.routes else self.tables.current()

    def _cleanse(self, data: bytes) -> Any:
        return self.cleanser.cleanse(decode_record(data, timestamp_unit="us"))

    def row(self, item: Mapping[str, Any]) -> tuple[Key | None, Row | None]:
        """(key, row) of a marshalled item (as boto3 returns it); row None when the mapping
        cannot hold the item, key None too when even its key does not fit."""
        try:
            change = self._cleanse(self.maker.put(item, version_us=0, event_id="verify").data)
            assert change.row is not None  # an INSERT always has a row
            row = self._parsed({n: change.row[n] for n in self.names})
            return change.key, row if self.mark is None else {**row, self.mark: None}
        except PoisonRecordError:
            pass
        try:
            keys = self.maker.keys_of(item)
            return self._cleanse(self.maker.remove(keys, version_us=0, event_id="v").data).key, None
        except PoisonRecordError:
            return None, None

    def _parsed(self, row: Row) -> Row:
        return parse_jsonb(row, self.jsonb)

    def comparable(self, row: Row) -> Row:
        """``row`` as compared: its ``jsonb`` values by what they hold."""
        out = dict(row)
        for name in self.jsonb:
            if out[name] is not None:
                out[name] = comparable(out[name])
        return out

    def same(self, a: Row | None, b: Row | None) -> bool:
        """Whether two rows (None: no row) hold the same values."""
        if a is None or b is None:
            return a is b
        return self.comparable(a) == self.comparable(b)

    def _columns(self) -> list[sa.ColumnElement[Any]]:
        live = self.tables.live
        marks = [live.c[self.mark]] if self.mark is not None else []
        return [
            *(
                sa.cast(live.c[n], sa.Text).label(n) if n in self.jsonb else live.c[n]
                for n in self.names
            ),
            *marks,
        ]

    def _match(self, table: sa.Table, keys: Sequence[Key]) -> sa.ColumnElement[bool]:
        if len(self.key) == 1:
            return table.c[self.key[0]].in_([k[0] for k in keys])
        return sa.tuple_(*[table.c[k] for k in self.key]).in_(list(keys))

    def _live_row(self, values: Sequence[Any]) -> tuple[Key, Row]:
        names = self.names if self.mark is None else [*self.names, self.mark]
        row = self._parsed(dict(zip(names, values, strict=True)))
        return tuple(row[k] for k in self.key), row

    def fetch(self, conn: sa.Connection, keys: Sequence[Key]) -> dict[Key, tuple[Row, int]]:
        """The live rows of ``keys`` with their versions (µs)."""
        live = self.tables.live
        out: dict[Key, tuple[Row, int]] = {}
        for start in range(0, len(keys), _PER_QUERY):
            match = self._match(live, keys[start : start + _PER_QUERY])
            query = sa.select(*self._columns(), live.c._ddbcdc_version_us).where(match)
            if self.current is not None:
                query = query.where(self.current)
            for result in conn.execute(query):
                key, row = self._live_row(result[:-1])
                out[key] = (row, int(result[-1]))
        return out

    def live_rows(self, conn: sa.Connection) -> Iterator[tuple[Key, Row]]:
        """Every live row, by key."""
        query = sa.select(*self._columns())
        if self.current is not None:
            query = query.where(self.current)
        for result in conn.execute(query):
            yield self._live_row(tuple(result))

    def versions(self, conn: sa.Connection, keys: Sequence[Key]) -> dict[Key, int]:
        """The version (µs) of the newest change applied to each of ``keys``, live or not."""
        ver = self.tables.versions
        cols = [ver.c[k] for k in self.key]
        out: dict[Key, int] = {}
        for start in range(0, len(keys), _PER_QUERY):
            match = self._match(ver, keys[start : start + _PER_QUERY])
            for r in conn.execute(sa.select(*cols, ver.c._ddbcdc_version_us).where(match)):
                out[tuple(r[:-1])] = int(r[-1])
        return out

    def key_dict(self, key: Key) -> dict[str, Any]:
        """A key as column -> value."""
        return dict(zip(self.key, key, strict=True))

    def dynamodb_key(self, key: Key) -> dict[str, Any]:
        """A PostgreSQL key -> the DynamoDB key (boto3 form) of the same item."""
        if self.types is None:
            raise ValueError("the table's key types are unknown (Rows built without them)")
        return dynamodb_key(dict(zip(self.sources, key, strict=True)), self.types)


def parse_jsonb(row: Row, names: Sequence[str]) -> Row:
    """``row`` with the ``jsonb`` text of its columns ``names`` parsed, every digit kept."""
    for name in names:
        text = row[name]
        if text is not None:
            row[name] = json.loads(text, parse_float=Decimal)
    return row


def jsonb_columns(live: sa.Table, names: Sequence[str]) -> list[str]:
    """Those of ``names`` that are ``jsonb`` columns of ``live``."""
    return [n for n in names if isinstance(live.c[n].type, pg.JSONB)]


def key_types(client: Any, mapping: TableMapping) -> tuple[dict[str, str], int | None]:
    """The DynamoDB key attributes of ``mapping``'s source table and their types
    (DescribeTable), and the table's approximate item count."""
    described = client.describe_table(TableName=mapping.source_table)["Table"]
    types = {a["AttributeName"]: a["AttributeType"] for a in described["AttributeDefinitions"]}
    key_names = {k["AttributeName"] for k in described["KeySchema"]}
    return {n: types[n] for n in key_names}, described.get("ItemCount")


def dynamodb_key(values: Mapping[str, Any], types: Mapping[str, str]) -> dict[str, Any]:
    """Key attribute values -> the marshalled key, typed by the table's attribute types."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        kind = types[name]
        if kind == "B":
            out[name] = {"B": bytes(value)}
        else:
            out[name] = {kind: str(value)}
    return out
