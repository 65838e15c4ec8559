"""The batch in PostgreSQL: a temporary stage table per mapping, filled by COPY.

Every statement of a batch reads the batch from ``ddbcdc_stage__<target>_<digest>``, a
``TEMPORARY`` table (per connection, no WAL) emptied at each commit (``ON COMMIT DELETE
ROWS``). One COPY per batch ships it: PostgreSQL parses it in bulk and every statement after
it is a join, whatever the batch size.

A stage row is the newest change of one key in the batch (the one that competes for the
key): the stored columns (mapped, then kept; jsonb ones as their exact JSON text, cast when
they are written), its version and its op. A mapping that keeps some deleted rows
(:mod:`ddbcdc.schema.deletes`) stages two more columns: a REMOVE's mode (``hard``, ``soft``,
``keep``) and whether the stored columns hold an image (an INSERT's or MODIFY's, or a REMOVE's
last image); a REMOVE without one stages its key alone. The COPY is binary: each value goes in
as its Python value's binary form, none is written or parsed as text. The change log has its
own rows (:mod:`ddbcdc.materialize.changelog`).

Temporary tables are created on first use on each database connection (:func:`ensure_temp`).
A rolled-back transaction (or savepoint) takes a table created in it along: an engine
listener forgets the connection's tables then, so the next batch checks for them and
creates what is missing.
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.dialects import postgresql as pg

from ddbcdc.cleanse import CleanChange
from ddbcdc.schema.tables import MappedTables

__all__ = ["StageRow", "StageTable", "copy_rows", "ensure_temp", "stage_type", "temp_table"]

_INFO_KEY = "ddbcdc_stages"

StageRow = tuple[Any, ...]

#: A change's stage columns after its stored ones: version (time, sequence, event id), op.
_VERSION_OP = operator.itemgetter(
    *[
        CleanChange._fields.index(name)
        for name in ("approximate_creation_us", "sequence", "event_id", "event_name")
    ]
)


def stage_type(type_: sa.types.TypeEngine[Any]) -> sa.types.TypeEngine[Any]:
    if isinstance(type_, pg.JSONB):
        return sa.Text()  # exact JSON text; cast to jsonb where it is written
    if isinstance(type_, sa.Text):
        return sa.Text()  # collations are applied where versions are compared
    return type_


def _forget_stages(conn: sa.Connection, *args: Any) -> None:
    if not conn.invalidated:
        conn.connection.info.pop(_INFO_KEY, None)


def temp_table(prefix: str, columns: list[sa.Column[Any]]) -> sa.Table:
    """A ``TEMPORARY ... ON COMMIT DELETE ROWS`` table named by its prefix and its shape (a
    changed mapping gets a table of its own on a connection that had the old one)."""
    shape = ",".join(f"{c.name}:{c.type!r}" for c in columns)
    digest = hashlib.blake2b(shape.encode(), digest_size=3).hexdigest()
    return sa.Table(
        f"{prefix}_{digest}",
        sa.MetaData(),
        *columns,
        prefixes=["TEMPORARY"],
        postgresql_on_commit="DELETE ROWS",
    )


def ensure_temp(conn: sa.Connection, table: sa.Table) -> None:
    """Create the temporary ``table`` on this connection unless it already has it."""
    info = conn.connection.info
    made: set[str] = info.setdefault(_INFO_KEY, set())
    if table.name in made:
        return
    engine = conn.engine
    for event in ("rollback", "rollback_savepoint"):
        if not sa.event.contains(engine, event, _forget_stages):
            sa.event.listen(engine, event, _forget_stages)
    table.create(conn, checkfirst=True)
    made.add(table.name)


_DIALECT = pg.dialect()  # type: ignore[no-untyped-call]
#: PostgreSQL's names of the column types a stage can have, for a binary COPY.
_BINARY_NAMES = {
    "BIGINT": "int8",
    "INTEGER": "int4",
    "SMALLINT": "int2",
    "NUMERIC": "numeric",
    "TEXT": "text",
    "BOOLEAN": "bool",
    "BYTEA": "bytea",
    "TIMESTAMP WITH TIME ZONE": "timestamptz",
    "DATE": "date",
}


def binary_types(table: sa.Table) -> list[str] | None:
    """The type of each column of ``table`` for a binary COPY, or None when one has a type
    without a plain binary form here (the COPY is then text)."""
    names = [c.type.compile(dialect=_DIALECT) for c in table.columns]
    found = [_BINARY_NAMES.get(name) for name in names]
    return None if None in found else [t for t in found if t is not None]


def copy_statement(table: sa.Table, *, binary: bool = False) -> sql.Composed:
    """``COPY table (its columns) FROM STDIN [(FORMAT BINARY)]``, identifiers quoted."""
    columns = sql.SQL(", ").join(sql.Identifier(c.name) for c in table.columns)
    form = sql.SQL(" (FORMAT BINARY)" if binary else "")
    return sql.SQL("COPY {} ({}) FROM STDIN{}").format(sql.Identifier(table.name), columns, form)


def copy_rows(
    conn: sa.Connection,
    statement: sql.Composed,
    rows: Iterable[Sequence[Any]],
    types: Sequence[str] | None = None,
) -> None:
    """COPY ``rows`` on the connection: binary with the column ``types`` given (the statement
    then says so), else text (PostgreSQL parses every value)."""
    driver = conn.connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor, cursor.copy(statement) as copy:
        if types is not None:
            copy.set_types(types)
        for row in rows:
            copy.write_row(row)


class StageTable:
    """The stage table of one mapping and how a batch gets into it."""

    def __init__(self, tables: MappedTables) -> None:
        mapping = tables.mapping
        live = tables.live
        names = mapping.stored_columns
        columns = [sa.Column(name, stage_type(live.c[name].type)) for name in names]
        columns += [
            sa.Column("_ddbcdc_version_us", sa.BigInteger),
            sa.Column("_ddbcdc_sequence", sa.Numeric),
            sa.Column("_ddbcdc_event_id", sa.Text),
            sa.Column("_ddbcdc_op", sa.Text),
        ]
        policy = mapping.policy
        self._policy = None if policy.hard else policy
        if self._policy is not None:
            columns += [sa.Column("_ddbcdc_mode", sa.Text), sa.Column("_ddbcdc_image", sa.Boolean)]
        self.table = temp_table(f"ddbcdc_stage__{mapping.target_table}", columns)
        self._names = list(names)
        self._key = list(mapping.key)
        take = operator.itemgetter(*names)
        self._take: Callable[[dict[str, Any]], tuple[Any, ...]] = (
            take if len(names) > 1 else lambda row: (take(row),)
        )
        # Binary: values go in as they are in Python, nothing is formatted or parsed as text.
        self._types = binary_types(self.table)
        self._copy_sql = copy_statement(self.table, binary=self._types is not None)

    def ensure(self, conn: sa.Connection) -> None:
        """Create the stage on this connection unless it already has it."""
        ensure_temp(conn, self.table)

    def clear(self, conn: sa.Connection) -> None:
        """Empty the stage inside the transaction (between attempts at parts of a batch)."""
        self.ensure(conn)
        conn.execute(sa.delete(self.table))

    def rows(self, newest: Sequence[CleanChange]) -> list[StageRow]:
        """Stage rows of the newest change of each key."""
        if self._policy is not None:
            return self._rows_keeping(newest)
        empty = (None,) * len(self._names)
        key, names, take, tail = self._key, self._names, self._take, _VERSION_OP
        out: list[StageRow] = []
        append = out.append
        for change in newest:
            row = change.row
            if row is not None:
                append(take(row) + tail(change))
            else:
                by_key = dict(zip(key, change.key, strict=True))
                values = tuple([by_key.get(n) for n in names]) if by_key else empty
                append(values + tail(change))
        return out

    def _rows_keeping(self, newest: Sequence[CleanChange]) -> list[StageRow]:
        """:meth:`rows` of a mapping that keeps some deleted rows: with mode and image."""
        assert self._policy is not None
        mode = self._policy.mode
        out: list[StageRow] = []
        for change in newest:
            row = change.row if change.cause is None else change.image
            if row is not None:
                values = self._take(row)
            else:
                by_key = dict(zip(self._key, change.key, strict=True))
                values = tuple([by_key.get(n) for n in self._names])
            out.append(
                (
                    *values,
                    change.approximate_creation_us,
                    change.sequence,
                    change.event_id,
                    change.event_name,
                    None if change.cause is None else mode(change.cause),
                    row is not None,
                )
            )
        return out

    def copy(self, conn: sa.Connection, rows: Sequence[StageRow]) -> None:
        """COPY ``rows`` into the stage."""
        copy_rows(conn, self._copy_sql, rows, self._types)
