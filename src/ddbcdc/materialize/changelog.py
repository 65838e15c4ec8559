"""The change log of a mapping (``ddbcdc_changes__<target>``): every distinct change once.

Its rows are built in Python while the batch is prepared (:meth:`ChangeLog.rows`): event id,
op, key, version, a REMOVE's cause (``_ddbcdc_removed_by``: ``user``, ``ttl`` or ``unknown``)
and ``_ddbcdc_row``, the stored columns as a JSON object, as PostgreSQL's
``jsonb_build_object`` would write them (numbers exact, bytea as ``"\\x..."`` hex, timestamps
as ISO-8601 in UTC, jsonb columns as their JSON; null for a REMOVE). :meth:`ChangeLog.write`
COPYs them straight into the log, in a savepoint: a change the log already holds (a batch
delivered again, a replay) makes the COPY fail on the event id, and then the rows go through
a temporary table and ``INSERT ... ON CONFLICT (event id) DO NOTHING``. Both ways, the
transaction holds the versions-row lock of every key it logs, so no other writer logs the
same change at the same time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import psycopg
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from ddbcdc.cleanse import CleanChange
from ddbcdc.materialize.staging import StageRow, copy_rows, copy_statement, ensure_temp, temp_table
from ddbcdc.schema.tables import REMOVED_BY, MappedTables

__all__ = ["ChangeLog", "LogRow"]

LogRow = tuple[Any, ...]


def _number(value: Decimal) -> orjson.Fragment:
    return orjson.Fragment(str(value))


def _bytea(value: bytes) -> str:
    return "\\x" + value.hex()


def _timestamp(value: datetime) -> str:
    utc = value.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += f".{utc.microsecond:06d}".rstrip("0")
    return text + "+00:00"


def _json(value: str) -> orjson.Fragment:
    return orjson.Fragment(value)


def _encoder(type_: sa.types.TypeEngine[Any]) -> Callable[[Any], Any] | None:
    """How a cleansed value of ``type_`` goes into ``_ddbcdc_row`` (None: as it is)."""
    if isinstance(type_, pg.JSONB):
        return _json
    if isinstance(type_, sa.LargeBinary):
        return _bytea
    if isinstance(type_, sa.DateTime):
        return _timestamp
    if type(type_) is sa.Numeric:
        return _number
    return None


class ChangeLog:
    """Rows and writes of one mapping's change log."""

    def __init__(self, tables: MappedTables) -> None:
        assert tables.changes is not None
        self.table = tables.changes
        mapping = tables.mapping
        self._key = list(mapping.key)
        live = tables.live
        self._encoders = [(n, _encoder(live.c[n].type)) for n in mapping.stored_columns]
        self._plain = all(e is None for _, e in self._encoders)
        names = ["_ddbcdc_event_id", "_ddbcdc_op", *self._key, "_ddbcdc_version_us"]
        names += ["_ddbcdc_sequence", REMOVED_BY, "_ddbcdc_row"]
        direct = sa.Table(self.table.name, sa.MetaData(), *[sa.Column(n) for n in names])
        self._copy_direct = copy_statement(direct)
        columns = [sa.Column(n, self.table.c[n].type) for n in names[:-1]]
        self.stage = temp_table(
            f"ddbcdc_logstage__{mapping.target_table}", [*columns, sa.Column(names[-1], sa.Text)]
        )
        self._copy_stage = copy_statement(self.stage)
        rows = sa.select(
            *[self.stage.c[n] for n in names[:-1]],
            sa.cast(self.stage.c._ddbcdc_row, pg.JSONB()),
        )
        self._insert = (
            pg.insert(self.table)
            .from_select(names, rows)
            .on_conflict_do_nothing(index_elements=["_ddbcdc_event_id"])
        )

    def _document(self, row: dict[str, Any]) -> str:
        if self._plain:
            return orjson.dumps({n: row[n] for n, _ in self._encoders}).decode()
        doc = {}
        for name, encode in self._encoders:
            value = row[name]
            doc[name] = value if encode is None or value is None else encode(value)
        return orjson.dumps(doc).decode()

    def rows(self, changes: Sequence[CleanChange]) -> list[LogRow]:
        """One log row per change (pure; the changes distinct by event id)."""
        out: list[LogRow] = []
        for c in changes:
            document = None if c.row is None else self._document(c.row)
            out.append(
                (
                    c.event_id,
                    c.event_name,
                    *c.key,
                    c.approximate_creation_us,
                    c.sequence,
                    c.cause,
                    document,
                )
            )
        return out

    def keyed_rows(self, changes: Sequence[tuple[CleanChange, tuple[Any, ...]]]) -> list[LogRow]:
        """:meth:`rows` of changes whose key in this table is given with each (a route's
        key: the change's own is the DynamoDB key)."""
        return [
            (
                c.event_id,
                c.event_name,
                *key,
                c.approximate_creation_us,
                c.sequence,
                c.cause,
                None if c.row is None else self._document(c.row),
            )
            for c, key in changes
        ]

    def write(self, conn: sa.Connection, rows: Sequence[StageRow]) -> None:
        """Append ``rows``; those the log already holds are left as they are."""
        if not rows:
            return
        try:
            with conn.begin_nested():
                copy_rows(conn, self._copy_direct, rows)
            return
        except psycopg.errors.UniqueViolation:
            pass  # some of these changes are logged already
        except sa.exc.IntegrityError as exc:
            if not isinstance(exc.orig, psycopg.errors.UniqueViolation):
                raise
        ensure_temp(conn, self.stage)
        conn.execute(sa.delete(self.stage))
        copy_rows(conn, self._copy_stage, rows)
        conn.execute(self._insert)
