"""Attempts in subtransactions inside PostgreSQL, for :mod:`ddbcdc.materialize.isolation`.

Core statements are prepared on a connection (``PREPARE``, :class:`Prepared`: their plans
are made once per connection) and run over ranges of candidates by the temporary PL/pgSQL
functions of ``isolate.sql`` (package data), each attempt in a subtransaction, many attempts
per call: no round trip per attempt. Both are made on first use on each connection and kept
there (a rolled-back transaction takes the functions along; they are made again).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.dialects import postgresql as pg

from ddbcdc.db import POISON_CLASSES

__all__ = [
    "CALL_KEYS",
    "HI",
    "LO",
    "LONGEST",
    "MARKER",
    "RANK",
    "SPACING",
    "Prepared",
    "driver",
    "run",
]

#: A temporary sequence (made with the function): the key index being written, which setval
#: keeps when a subtransaction rolls back.
MARKER = "pg_temp.ddbcdc_isolate_at"
#: How long ranges are: about sqrt(SPACING * keys per refused key). The cost of an attempt
#: over the cost of a key in it; a longer range wastes more when refused.
SPACING = 4.0
#: The longest range tried at once: a generic plan joins a range's rows with the keys it
#: won by nested loops, quadratic in the range.
LONGEST = 64
#: Keys per call of the function.
CALL_KEYS = 1000
_SIGNATURE = (
    "pg_temp.ddbcdc_isolate(text, text, text, text, integer, integer, boolean, text[], "
    "double precision, double precision, integer)"
)
_RESULT = (
    "key_index",
    "rank",
    "state",
    "table_name",
    "column_name",
    "constraint_name",
    "datatype",
    "deleted",
    "upserted",
)
#: The prepared statements' placeholders: first and last key index, rank.
_LO, _HI, _RANK = (sa.literal_column(f"${n}", sa.Integer) for n in (1, 2, 3))
_DOLLAR = pg.dialect(paramstyle="numeric_dollar")  # type: ignore[no-untyped-call]
#: The prepared statements' placeholders: first and last key index, rank.
LO, HI, RANK = (sa.literal_column(f"${n}", sa.Integer) for n in (1, 2, 3))
_DOLLAR = pg.dialect(paramstyle="numeric_dollar")  # type: ignore[no-untyped-call]


@dataclass(frozen=True, slots=True)
class Prepared:
    """A statement prepared (``PREPARE``) on each connection that isolates."""

    name: str
    text: sql.Composed

    @classmethod
    def of(cls, kind: str, statement: sa.ClauseElement, arguments: int) -> Prepared:
        body = str(statement.compile(dialect=_DOLLAR, compile_kwargs={"literal_binds": True}))
        name = f"ddbcdc_{kind}_{hashlib.blake2b(body.encode(), digest_size=6).hexdigest()}"
        types = sql.SQL(f" ({', '.join(['integer'] * arguments)})" if arguments else "")
        text = sql.SQL("PREPARE {}{} AS ").format(sql.Identifier(name), types) + sql.SQL(body)
        return cls(name, text)


def function_text(name: str) -> str:
    """The temporary functions of ``name`` (package data), with those of ``spans.sql``
    that it calls."""
    folder = resources.files("ddbcdc.materialize")
    return folder.joinpath("spans.sql").read_text() + folder.joinpath(name).read_text()


def run(
    conn: sa.Connection,
    statements: Sequence[Prepared | None],
    ranks: Prepared,
    keys: int,
    *,
    settle_only: bool,
) -> list[sa.Row[Any]]:
    """Call ``ddbcdc_isolate`` over key indexes 0 .. ``keys`` - 1, :data:`CALL_KEYS` at a time
    (each call is one statement: ``statement_timeout`` bounds it), with ``statements`` (apply,
    delete, log or None) and ``ranks``; the rows of every call."""
    _ensure(conn, [*[p for p in statements if p is not None], ranks])
    names = [p.name if p is not None else None for p in statements]
    rows: list[sa.Row[Any]] = []
    refused = 0
    for first in range(0, keys, CALL_KEYS):
        call = sa.func.pg_temp.ddbcdc_isolate(
            names[0],
            names[1],
            sa.cast(names[2], sa.Text),
            ranks.name,
            first,
            min(keys, first + CALL_KEYS),
            settle_only,
            sa.cast(sa.literal(sorted(POISON_CLASSES), pg.ARRAY(sa.Text)), pg.ARRAY(sa.Text)),
            first / refused if refused else float(keys),  # keys per refused key so far
            SPACING,
            LONGEST,
        ).table_valued(*_RESULT)
        found = list(conn.execute(sa.select(call)))
        refused += sum(1 for r in found if r.key_index is not None and r.rank == 0)
        rows += found
    return rows


def _ensure(conn: sa.Connection, statements: list[Prepared]) -> None:
    """The functions and ``statements`` on this connection."""
    name = sa.column("name", sa.Text)
    prepared: sa.Select[Any] = (
        sa.select(sa.func.array_agg(name))
        .select_from(sa.table("pg_prepared_statements"))
        .where(name.in_([p.name for p in statements]))
    )
    function = sa.func.to_regprocedure(_SIGNATURE).is_not(None)
    have, made = conn.execute(sa.select(prepared.scalar_subquery(), function)).one()
    connection = driver(conn)
    if not made:
        connection.execute(function_text("isolate.sql"))
    for statement in statements:
        if statement.name not in (have or ()):
            connection.execute(statement.text)


def driver(conn: sa.Connection) -> psycopg.Connection[Any]:
    driver = conn.connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    return driver
