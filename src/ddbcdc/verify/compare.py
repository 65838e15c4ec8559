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
from ddbcdc.verify.rows import Key, Row, Rows, describe

__all__ = ["Comparison", "compare", "expected_rows", "live_rows"]


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
    rows = Rows(mapping)
    return _expected(rows, (marshal(item) for item in items))[0]


def live_rows(conn: sa.Connection, mapping: TableMapping) -> dict[Key, Row]:
    """Every live row of ``mapping``'s table, as compared."""
    rows = Rows(mapping)
    return {key: rows.comparable(row) for key, row in rows.live_rows(conn)}


def compare(dynamodb: Any, engine: sa.Engine, mapping: TableMapping) -> Comparison:
    """Scan the source table and compare it with the live PostgreSQL table."""
    rows, _ = describe(dynamodb, mapping)
    pages = scan_pages(
        dynamodb,
        mapping.source_table,
        segment=0,
        total_segments=1,
        start_key=None,
        limiter=ReadLimiter(),
    )
    items = [item for page in pages for item in page.items]
    expected, unmappable = _expected(rows, items)
    with engine.connect() as conn:
        actual = {key: rows.comparable(row) for key, row in rows.live_rows(conn)}
    return Comparison(
        source_table=mapping.source_table,
        target_table=mapping.target_table,
        source_items=len(items),
        target_rows=len(actual),
        missing=tuple(sorted(expected.keys() - actual.keys())),
        extra=tuple(sorted(actual.keys() - expected.keys() - unmappable)),
        different=tuple(
            sorted(k for k in expected.keys() & actual.keys() if expected[k] != actual[k])
        ),
        unmappable=len(items) - len(expected),
    )
