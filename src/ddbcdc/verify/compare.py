"""A DynamoDB table against its PostgreSQL copy in one pass, both sides in memory.

The same comparison as ``ddbcdc verify`` (:class:`ddbcdc.verify.rows.Rows`: every stored
column, mapped and kept, ``jsonb`` values by what they hold), without its re-check: a
consistent Scan against the live rows as they are now. For the demo, the tests and anyone
who waits for a pipeline to catch up (call it until :attr:`Comparison.matches`). ``ddbcdc
verify`` (:mod:`ddbcdc.verify.run`) is the bounded-memory one that tells drift from changes in
flight.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from ddbcdc.backfill.scan import ReadLimiter, scan_pages
from ddbcdc.decode.attributes import marshal
from ddbcdc.schema.mapping import TableMapping
from ddbcdc.verify.routed import ROUTE, describe, rows_for
from ddbcdc.verify.rows import Key, Row, Rows

__all__ = ["Comparison", "compare", "compare_routes", "expected_rows", "live_rows"]


@dataclass(frozen=True)
class Comparison:
    """The outcome of comparing one source table with its target table.

    Attributes:
        source_items: items the Scan returned.
        target_rows: rows in the live PostgreSQL table.
        missing: keys in DynamoDB but not in PostgreSQL.
        extra: keys in PostgreSQL but not in DynamoDB.
        different: keys on both sides whose rows differ.
        unmappable: items the mapping cannot hold (the worker dead-letters those; not a
            difference, as for ``ddbcdc verify``).
    """

    source_table: str
    target_table: str
    source_items: int
    target_rows: int
    missing: tuple[Key, ...] = field(default=())
    extra: tuple[Key, ...] = field(default=())
    different: tuple[Key, ...] = field(default=())
    unmappable: int = 0

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


def _expected(rows: Rows, items: Iterable[Mapping[str, Any]]) -> tuple[dict[Key, Row], set[Key]]:
    """The rows of marshalled ``items`` as compared, and the keys of those with no row."""
    expected: dict[Key, Row] = {}
    unmappable: set[Key] = set()
    for item in items:
        key, row = rows.row(item)
        if row is not None:
            assert key is not None
            expected[key] = rows.comparable(row)
        elif key is not None:
            unmappable.add(key)
    return expected, unmappable


def expected_rows(items: Iterable[Mapping[str, Any]], mapping: TableMapping) -> dict[Key, Row]:
    """The rows the worker holds for ``items`` (Python values, as ``unmarshal`` gives them),
    as compared; items the mapping cannot hold have none."""
    rows = rows_for(mapping)
    return _expected(rows, (marshal(item) for item in items))[0]


def live_rows(conn: sa.Connection, mapping: TableMapping) -> dict[Key, Row]:
    """Every live row of ``mapping``'s table, as compared."""
    rows = rows_for(mapping)
    return {key: rows.comparable(row) for key, row in rows.live_rows(conn)}


def _scan(dynamodb: Any, mapping: TableMapping) -> list[dict[str, Any]]:
    pages = scan_pages(
        dynamodb,
        mapping.source_table,
        segment=0,
        total_segments=1,
        start_key=None,
        limiter=ReadLimiter(),
    )
    return [item for page in pages for item in page.items]


def _comparison(
    source: str,
    target: str,
    expected: dict[Key, Row],
    actual: dict[Key, Row],
    unmappable: set[Key],
    items: int,
) -> Comparison:
    return Comparison(
        source_table=source,
        target_table=target,
        source_items=items,
        target_rows=len(actual),
        missing=tuple(sorted(expected.keys() - actual.keys())),
        extra=tuple(sorted(actual.keys() - expected.keys() - unmappable)),
        different=tuple(
            sorted(k for k in expected.keys() & actual.keys() if expected[k] != actual[k])
        ),
        unmappable=items - len(expected),
    )


def compare(dynamodb: Any, engine: sa.Engine, mapping: TableMapping) -> Comparison:
    """Scan the source table and compare it with the live PostgreSQL table (of a routed
    mapping: with every route's table at once, rows and their routes)."""
    rows, _ = describe(dynamodb, mapping)
    items = _scan(dynamodb, mapping)
    expected, unmappable = _expected(rows, items)
    with engine.connect() as conn:
        actual = {key: rows.comparable(row) for key, row in rows.live_rows(conn)}
    return _comparison(
        mapping.source_table, mapping.target_table, expected, actual, unmappable, len(items)
    )


def compare_routes(dynamodb: Any, engine: sa.Engine, mapping: TableMapping) -> list[Comparison]:
    """A routed mapping's tables one by one: each route's table against the items of its
    entity (the catch-all's against the items no other route takes)."""
    rows, _ = describe(dynamodb, mapping)
    items = _scan(dynamodb, mapping)
    expected, unmappable = _expected(rows, items)
    with engine.connect() as conn:
        actual = {key: rows.comparable(row) for key, row in rows.live_rows(conn)}
    out = []
    for target in mapping.targets:
        mine = {k: r for k, r in expected.items() if r.get(ROUTE) == target}
        have = {k: r for k, r in actual.items() if r.get(ROUTE) == target}
        out.append(_comparison(mapping.source_table, target, mine, have, unmappable, len(mine)))
    return out
