"""Compare a DynamoDB table with its materialized copy in PostgreSQL.

The source side is a Scan of the DynamoDB table, each item cleansed through the same table
mapping the worker uses, so the two sides are compared as PostgreSQL rows (every stored
column: mapped and kept; ``jsonb`` values by what they hold, not how they are spelled). Used
by the demo, the end-to-end tests and anyone who wants to check a running pipeline; it holds
both sides in memory. ``ddbcdc verify`` (:mod:`ddbcdc.verify.run`) is the streaming,
bounded-memory comparison that tells drift from changes in flight.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from ddbcdc.cleanse import Cleanser
from ddbcdc.decode.attributes import unmarshal
from ddbcdc.decode.itemjson import comparable
from ddbcdc.decode.record import ChangeRecord
from ddbcdc.schema.mapping import TableMapping
from ddbcdc.schema.tables import mapped_tables

__all__ = ["Comparison", "compare", "expected_rows", "live_rows", "scan_items"]

Key = tuple[Any, ...]
Row = dict[str, Any]


@dataclass(frozen=True)
class Comparison:
    """The outcome of comparing one source table with its target table.

    Attributes:
        source_items: items the Scan returned.
        target_rows: rows in the live PostgreSQL table.
        missing: keys in DynamoDB but not in PostgreSQL.
        extra: keys in PostgreSQL but not in DynamoDB.
        different: keys on both sides whose rows differ.
    """

    source_table: str
    target_table: str
    source_items: int
    target_rows: int
    missing: tuple[Key, ...] = field(default=())
    extra: tuple[Key, ...] = field(default=())
    different: tuple[Key, ...] = field(default=())

    @property
    def matches(self) -> bool:
        """True when both sides hold exactly the same rows."""
        return not (self.missing or self.extra or self.different)

    def __str__(self) -> str:
        return (
            f"{self.source_table} -> {self.target_table}: {self.source_items} items, "
            f"{self.target_rows} rows, {len(self.missing)} missing, {len(self.extra)} extra, "
            f"{len(self.different)} different"
        )


def scan_items(dynamodb: Any, table: str) -> Iterator[dict[str, Any]]:
    """Every item of ``table`` (a consistent, paginated Scan), unmarshalled."""
    paginator = dynamodb.get_paginator("scan")
    for page in paginator.paginate(TableName=table, ConsistentRead=True):
        for item in page.get("Items", ()):
            yield unmarshal(item, path=f"Scan({table})")


def expected_rows(items: Iterator[Mapping[str, Any]], mapping: TableMapping) -> dict[Key, Row]:
    """The rows the worker should hold for ``items``: each cleansed like an INSERT.

    Raises:
        CleanseError: an item the mapping cannot hold (the worker dead-letters those).
    """
    cleanser = Cleanser(mapping)
    now = datetime.now(UTC)
    rows: dict[Key, Row] = {}
    for index, item in enumerate(items):
        record = ChangeRecord(
            event_id=f"scan-{index}",
            event_name="INSERT",
            table_name=mapping.source_table,
            aws_region=None,
            keys={name: item[name] for name in mapping.key if name in item},
            new_image=dict(item),
            old_image=None,
            approximate_creation=now,
            approximate_creation_us=0,
            size_bytes=None,
            is_ttl_delete=False,
        )
        change = cleanser.cleanse(record)
        assert change.row is not None  # an INSERT always has a row
        rows[change.key] = _comparable_row(change.row, _jsonb_names(mapping))
    return rows


def _jsonb_names(mapping: TableMapping) -> set[str]:
    live = mapped_tables([mapping])[mapping.target_table].live
    return {n for n in mapping.stored_columns if isinstance(live.c[n].type, pg.JSONB)}


def _comparable_row(row: Mapping[str, Any], jsonb: set[str]) -> Row:
    """``row`` with its jsonb values (JSON text) as what they hold."""
    out = dict(row)
    for name in jsonb:
        text = out.get(name)
        if text is not None:
            out[name] = comparable(json.loads(text, parse_float=Decimal))
    return out


def live_rows(conn: sa.Connection, mapping: TableMapping) -> dict[Key, Row]:
    """The stored columns of every row in the live PostgreSQL table, by key (jsonb values as
    what they hold, :func:`ddbcdc.decode.itemjson.comparable`)."""
    live = mapped_tables([mapping])[mapping.target_table].live
    names = list(mapping.stored_columns)
    jsonb = _jsonb_names(mapping)
    query = sa.select(
        *(sa.cast(live.c[n], sa.Text).label(n) if n in jsonb else live.c[n] for n in names)
    )
    rows: dict[Key, Row] = {}
    for result in conn.execute(query).mappings():
        row = _comparable_row({name: result[name] for name in names}, jsonb)
        rows[tuple(row[k] for k in mapping.key)] = row
    return rows


def compare(dynamodb: Any, engine: sa.Engine, mapping: TableMapping) -> Comparison:
    """Scan the source table and compare it with the live PostgreSQL table."""
    expected = expected_rows(scan_items(dynamodb, mapping.source_table), mapping)
    with engine.connect() as conn:
        actual = live_rows(conn, mapping)
    return Comparison(
        source_table=mapping.source_table,
        target_table=mapping.target_table,
        source_items=len(expected),
        target_rows=len(actual),
        missing=tuple(sorted(expected.keys() - actual.keys())),
        extra=tuple(sorted(actual.keys() - expected.keys())),
        different=tuple(
            sorted(k for k in expected.keys() & actual.keys() if expected[k] != actual[k])
        ),
    )
