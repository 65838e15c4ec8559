"""Screening a routed mapping's batch inside PostgreSQL, for :mod:`ddbcdc.materialize.bisection`.

The newest change of each key is COPYed once into a candidate table
(``ddbcdc_screen__<target>``, temporary, emptied at each commit), numbered, and temporary
PL/pgSQL functions (``screen.sql``, package data) run the routed writer's claim and upsert
(:meth:`~ddbcdc.materialize.routed.RoutedWriter.arbiter`, prepared once per connection) over
ranges of them, each attempt in a subtransaction that is always rolled back: nothing is kept,
and one statement per :data:`~ddbcdc.materialize.attempts.CALL_KEYS` keys names the keys
refused alone. A change the claim and upsert refuse alone is refused by the writer's whole
batch statement alone too (they are its first steps); one they take may still be refused by
its delete or change log, which the screen does not run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from ddbcdc.db import POISON_CLASSES, describe_state
from ddbcdc.materialize.attempts import (
    CALL_KEYS,
    HI,
    LO,
    LONGEST,
    SPACING,
    Prepared,
    driver,
    function_text,
)
from ddbcdc.materialize.routed import RoutedWriter
from ddbcdc.materialize.staging import StageRow, binary_types, copy_rows, copy_statement, temp_table

__all__ = ["Screen"]

_K = "_ddbcdc_k"
_SIGNATURE = "pg_temp.ddbcdc_screen_keys(text, integer[], text[])"
_RESULT = ("key_index", "state", "table_name", "column_name", "constraint_name", "datatype")


class Screen:
    """The candidate table and prepared attempt of one routed mapping."""

    def __init__(self, writer: RoutedWriter) -> None:
        stage = writer.stage
        columns = [sa.Column(c.name, c.type) for c in stage.table.columns]
        self.table = temp_table(
            f"ddbcdc_screen__{writer.mapping.target_table}", [*columns, sa.Column(_K, sa.Integer)]
        )
        sa.Index(f"{self.table.name}_k", self.table.c[_K])
        self._types = binary_types(self.table)
        self._copy_sql = copy_statement(self.table, binary=self._types is not None)
        c = self.table.c
        ranged = sa.select(*[c[n.name] for n in columns]).where(c[_K].between(LO, HI))
        arbiter = _literal_ints(writer.arbiter(ranged.subquery("s")))
        self._attempt = Prepared.of("screen", arbiter, 2)

    def load(self, conn: sa.Connection, rows: Sequence[StageRow]) -> None:
        """The candidates (stage rows, numbered from 0 in this order) and the functions on
        this connection."""
        _ensure(conn, self.table, self._attempt)
        conn.execute(sa.delete(self.table))
        copy_rows(conn, self._copy_sql, [(*r, i) for i, r in enumerate(rows)], self._types)

    def search(self, conn: sa.Connection, keys: int) -> list[int]:
        """The candidates of ``keys`` refused alone, found by ranges and halves."""
        found: list[int] = []
        for first in range(0, keys, CALL_KEYS):
            last = min(keys, first + CALL_KEYS)
            gap = first / len(found) if found else float(keys)
            call = sa.func.pg_temp.ddbcdc_screen(
                self._attempt.name, first, last, _poison(), gap, SPACING, LONGEST
            ).table_valued("key_index")
            found += [k for (k,) in conn.execute(sa.select(call))]
        return found

    def refused(self, conn: sa.Connection, candidates: Sequence[int]) -> dict[int, str]:
        """Of ``candidates``, those refused alone now, with why (naming no value)."""
        found: dict[int, str] = {}
        for first in range(0, len(candidates), CALL_KEYS):
            part = list(candidates[first : first + CALL_KEYS])
            call = sa.func.pg_temp.ddbcdc_screen_keys(
                self._attempt.name, sa.cast(sa.literal(part), pg.ARRAY(sa.Integer)), _poison()
            ).table_valued(*_RESULT)
            for row in conn.execute(sa.select(call)):
                found[row.key_index] = describe_state(row.state, *row[2:])
        return found

    def clear(self, conn: sa.Connection) -> None:
        conn.execute(sa.delete(self.table))


def _poison() -> sa.ColumnElement[Any]:
    return sa.cast(sa.literal(sorted(POISON_CLASSES), pg.ARRAY(sa.Text)), pg.ARRAY(sa.Text))


def _literal_ints(statement: sa.Select[Any]) -> sa.Select[Any]:
    """``statement`` with its integer bound values written in (``literal_binds`` leaves those
    of a data-modifying CTE's RETURNING as parameters, which a prepared statement of two
    parameters cannot take)."""

    def swap(element: Any) -> Any:
        value = getattr(element, "value", None)
        if isinstance(element, sa.BindParameter) and type(value) is int:
            return sa.literal_column(str(value), element.type)
        return None

    traverse: Any = sa.sql.visitors.replacement_traverse
    swapped: sa.Select[Any] = traverse(statement, {}, swap)
    return swapped


def _ensure(conn: sa.Connection, table: sa.Table, attempt: Prepared) -> None:
    """The candidate table, the functions and ``attempt`` on this connection."""
    name = sa.column("name", sa.Text)
    prepared = (
        sa.exists().select_from(sa.table("pg_prepared_statements")).where(name == attempt.name)
    )
    function = sa.func.to_regprocedure(_SIGNATURE).is_not(None)
    have, made = conn.execute(sa.select(prepared, function)).one()
    table.create(conn, checkfirst=True)
    if not made:
        driver(conn).execute(function_text("screen.sql"))
    if not have:
        driver(conn).execute(attempt.text)
