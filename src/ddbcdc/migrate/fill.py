"""Fill columns a migration added from the attributes the rows kept: one batch of rows.

A :class:`Filler` takes rows its job selected and locked (:mod:`ddbcdc.migrate.jobs`): each
new column's attribute goes through the column's own coercer, rules and default, as
cleansing a change would; a value that does not fit becomes a dead letter (stage
``backfill``) and its attribute stays kept; a filled attribute leaves the unmapped ones. A
row PostgreSQL refuses to update (a trigger, a constraint) is a dead letter too (stage
``backfill``, naming the SQLSTATE and constraint, never a value) and keeps what it had; the
other rows of its batch are filled.

From the unmapped attributes, a row that no longer holds the attribute keeps its column as
it is (a writer with the new mapping set it); a row written before anything was kept
(``NULL``) is left alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from ddbcdc.cleanse.coerce import coercer
from ddbcdc.cleanse.kept import refusal_reason
from ddbcdc.cleanse.routes import RoutedCleanser
from ddbcdc.db import classify, describe, is_database_error
from ddbcdc.decode.attributes import marshal, unmarshal
from ddbcdc.decode.itemjson import decode_attributes, encode_attributes
from ddbcdc.materialize.deadletters import DeadLetter, write_dead_letters
from ddbcdc.schema.bookkeeping import dead_letters
from ddbcdc.schema.mapping import ColumnMapping, TableMapping
from ddbcdc.schema.tables import MappedTables, mapped_tables

__all__ = ["BackfillReport", "Filler"]

Key = tuple[Any, ...]


@dataclass
class BackfillReport:
    """What a backfill did in this run.

    Attributes:
        table: the target table.
        columns: the columns filled.
        rows: rows visited.
        filled: rows whose columns were set.
        dead_lettered: values that did not fit (one dead letter each).
        finished: every row was visited.
    """

    table: str
    columns: list[str]
    rows: int = 0
    filled: int = 0
    dead_lettered: int = 0
    finished: bool = False
    letters: list[DeadLetter] = field(default_factory=list, repr=False)

    def add(self, batch: BackfillReport) -> None:
        """Count ``batch`` (one batch of this run) in this run's totals."""
        self.rows += batch.rows
        self.filled += batch.filled
        self.dead_lettered += batch.dead_lettered


class Filler:
    """Fills some columns of one mapping's rows from a kept column.

    Args:
        mapping: the mapping (its columns, coercers and kept columns).
        columns: the mapped columns to fill.
        source: the kept column to read (``item_column`` or ``extra_column``).
        routed: when ``mapping`` is a route's, the routed mapping: its versions rows (one
            per DynamoDB key) are the ones locked, found from each row's key in the route.
    """

    def __init__(
        self,
        mapping: TableMapping,
        columns: Sequence[str],
        source: str,
        *,
        routed: TableMapping | None = None,
    ) -> None:
        by_name = {c.name: c for c in mapping.columns}
        self.mapping = mapping
        self.columns: list[ColumnMapping] = [by_name[c] for c in dict.fromkeys(columns)]
        self.coercers: dict[str, Callable[[Any], Any]] = {c.name: coercer(c) for c in self.columns}
        self.source = source
        self.from_item = source == mapping.item_column
        self.extra = mapping.extra_column
        self.tables: MappedTables = mapped_tables([mapping])[mapping.name]
        live = self.tables.live
        self.key = [live.c[k] for k in mapping.key]
        self._update = self._update_statement()
        self._versions, self._source_key = self.tables.versions, None
        self._source_columns = list(mapping.key)
        if routed is not None:
            self._source_columns = list(routed.key)
            self._versions = mapped_tables([routed])[routed.name].versions
            target = mapping.target_table
            self._source_key = partial(RoutedCleanser(routed).source_key, target)

    def _text(self, name: str) -> sa.ColumnElement[Any]:
        column = self.tables.live.c[name]
        return sa.cast(column, sa.Text) if isinstance(column.type, pg.JSONB) else column

    def select(self) -> sa.Select[Any]:
        """The rows' keys, kept text and current values of the columns to fill."""
        kept = [self.source] + ([self.extra] if self.extra and self.extra != self.source else [])
        names = [*kept, *(c.name for c in self.columns)]
        return sa.select(*self.key, *[self._text(n).label(n) for n in names])

    def _update_statement(self) -> sa.Update:
        live = self.tables.live
        values: dict[str, Any] = {}
        for name in [c.name for c in self.columns] + ([self.extra] if self.extra else []):
            column = live.c[name]
            param = sa.bindparam(f"v_{name}", type_=sa.Text() if _jsonb(column) else column.type)
            values[name] = sa.cast(param, pg.JSONB()) if _jsonb(column) else param
        values["_ddbcdc_updated_at"] = sa.func.now()
        match = [c == sa.bindparam(f"k_{c.name}", type_=c.type) for c in self.key]
        return sa.update(live).where(*match).values(values)

    def fill(
        self, conn: sa.Connection, rows: Sequence[sa.Row[Any]], *, write_letters: bool = True
    ) -> BackfillReport:
        """Fill ``rows`` (from :meth:`select`, locked) and write their dead letters (or
        only return them in the report)."""
        report = BackfillReport(self.mapping.target_table, [c.name for c in self.columns])
        updates = []
        for row in rows:
            report.rows += 1
            update = self._row(row._mapping, report)
            if update is not None:
                updates.append(update)
        if updates:
            report.filled = self._write(conn, updates, report)
        if write_letters:
            write_dead_letters(conn, self._new_letters(conn, report.letters))
        return report

    def _write(
        self, conn: sa.Connection, updates: list[dict[str, Any]], report: BackfillReport
    ) -> int:
        """Run the updates: all at once, or, when PostgreSQL refuses one, row by row, each
        refused row a dead letter. Returns how many rows were updated."""
        try:
            with conn.begin_nested():
                conn.execute(self._update, updates)
            return len(updates)
        except Exception as exc:
            if not _refused(exc):
                raise
        filled = 0
        for update in updates:
            try:
                with conn.begin_nested():
                    conn.execute(self._update, [update])
                filled += 1
            except Exception as exc:
                if not _refused(exc):
                    raise
                report.letters.append(self._refused_letter(update, exc))
                report.dead_lettered += 1
        return filled

    def _refused_letter(self, update: dict[str, Any], exc: Exception) -> DeadLetter:
        """The dead letter of a row whose update PostgreSQL refused."""
        key = {name: update[f"k_{name}"] for name in self.mapping.key}
        names = [c.name for c in self.columns]
        diag = getattr(getattr(exc, "orig", exc), "diag", None)
        column = getattr(diag, "column_name", None) or None
        payload = {"backfill": self.mapping.target_table, "column": column or names[0]}
        payload |= {"columns": names, "key": marshal(key)}
        return DeadLetter(
            stage="backfill",
            error=f"{self.mapping.target_table} ({', '.join(names)}): PostgreSQL refused the "
            f"row's update: {describe(exc)}",
            error_path=self.source,
            payload=orjson.dumps(payload),
            source_table=self.mapping.source_table,
            target_table=self.mapping.target_table,
            error_column=column,
            error_reason=f"refused by PostgreSQL (SQLSTATE {getattr(diag, 'sqlstate', '')})",
        )

    def _new_letters(self, conn: sa.Connection, letters: list[DeadLetter]) -> list[DeadLetter]:
        """Those of ``letters`` not pending already (a second pass finds the same)."""
        if not letters:
            return letters
        pending = sa.select(dead_letters.c.payload).where(
            dead_letters.c.stage == "backfill",
            dead_letters.c.target_table == self.mapping.target_table,
            dead_letters.c.replayed_at.is_(None),
            dead_letters.c.discarded_at.is_(None),
            dead_letters.c.payload.in_([x.payload for x in letters]),
        )
        known = set(conn.execute(pending).scalars())
        return [x for x in letters if x.payload not in known]

    def _row(self, row: Any, report: BackfillReport) -> dict[str, Any] | None:
        """The update of one row (None: nothing to change)."""
        text = row[self.source]
        if text is None:
            return None  # written before anything was kept
        attributes = decode_attributes(text)
        extra = attributes if not self.from_item else None
        if extra is None and self.extra is not None and row[self.extra] is not None:
            extra = decode_attributes(row[self.extra])
        values: dict[str, Any] = {}
        taken: set[str] = set()
        changed = False
        for column in self.columns:
            current = row[column.name]
            value, took = self._value(column, attributes, current, row, report)
            values[f"v_{column.name}"] = value
            changed = changed or value != current
            if took:
                taken.add(column.source)
        if extra is not None and taken & extra.keys():
            extra = {name: v for name, v in extra.items() if name not in taken}
            changed = True
        if not changed:
            return None
        if self.extra is not None:
            values[f"v_{self.extra}"] = None if extra is None else encode_attributes(extra)
        values.update({f"k_{c.name}": row[c.name] for c in self.key})
        return values

    def _value(
        self,
        column: ColumnMapping,
        attributes: dict[str, Any],
        current: Any,
        row: Any,
        report: BackfillReport,
    ) -> tuple[Any, bool]:
        """(the column's value, whether the attribute was taken from the kept ones)."""
        present = column.source in attributes
        # Not among the unmapped attributes: set by a writer with the new mapping, or the
        # item never had it (then the default applies, as in cleansing).
        unset = current is None and (column.default is not None or column.required)
        if not present and not self.from_item and not unset:
            return current, False
        value = attributes.get(column.source)
        if value is None:
            value = column.default
        try:
            coerced = self.coercers[column.name](value) if value is not None else None
            if coerced is None and column.required:
                raise ValueError("required attribute is missing")
        except ValueError as exc:
            report.letters.append(self._letter(column, str(exc), value, row))
            report.dead_lettered += 1
            return current, False
        return coerced, present

    def _letter(self, column: ColumnMapping, message: str, value: Any, row: Any) -> DeadLetter:
        key = {name: row[name] for name in self.mapping.key}
        payload = {
            "backfill": self.mapping.target_table,
            "column": column.name,
            "key": marshal(key),
        }
        return DeadLetter(
            stage="backfill",
            error=f"{self.mapping.target_table}.{column.name}: {message}",
            error_path=f"{self.source}.{column.source}",
            payload=orjson.dumps(payload),
            source_table=self.mapping.source_table,
            target_table=self.mapping.target_table,
            error_column=column.name,
            error_reason=refusal_reason(column.type, message, value),
        )

    def key_of(self, row: Any) -> Key:
        """The key of a selected row."""
        return tuple(row[c.name] for c in self.key)

    def after(self, key: Key, table: sa.Table | None = None) -> sa.ColumnElement[bool]:
        """Rows (of the live table, or ``table``) after ``key`` in key order."""
        return self._compare(key, table, after=True)

    def up_to(self, key: Key, table: sa.Table | None = None) -> sa.ColumnElement[bool]:
        """Rows (of the live table, or ``table``) up to ``key`` in key order."""
        return self._compare(key, table, after=False)

    def _compare(self, key: Key, table: sa.Table | None, *, after: bool) -> sa.ColumnElement[bool]:
        columns = [table.c[c.name] for c in self.key] if table is not None else self.key
        bound = [sa.literal(v, c.type) for v, c in zip(key, self.key, strict=True)]
        mine, theirs = sa.tuple_(*columns), sa.tuple_(*bound)
        return mine > theirs if after else mine <= theirs

    def lock(self, conn: sa.Connection, after: Key | None, batch_size: int) -> list[sa.Row[Any]]:
        """The next rows after ``after`` (at most ``batch_size`` of them, and those written
        since in their range), locked: their keys' versions rows first, then the rows."""
        keys = sa.select(*self.key).order_by(*self.key).limit(batch_size)
        if after is not None:
            keys = keys.where(self.after(after))
        found = conn.execute(keys).all()
        if not found:
            return []
        last = tuple(found[-1])
        rows = self.select().where(self.up_to(last)).order_by(*self.key)
        if after is not None:
            rows = rows.where(self.after(after))
        conn.execute(self._held(conn, after, last).with_for_update()).all()
        return list(conn.execute(rows.with_for_update(of=self.tables.live)).all())

    def _held(self, conn: sa.Connection, after: Key | None, last: Key) -> sa.Select[Any]:
        """The versions rows of the keys after ``after`` up to ``last``, in key order. Of a
        route's rows: the rows of their DynamoDB keys (the rows of those written since in
        the range are not among them: their live rows are still locked, in key order)."""
        versions = self._versions
        if self._source_key is None:
            ver_key = [versions.c[c.name] for c in self.key]
            held = sa.select(*ver_key).where(self.up_to(last, versions)).order_by(*ver_key)
            return held.where(self.after(after, versions)) if after is not None else held
        in_range = sa.select(*self.key).where(self.up_to(last))
        if after is not None:
            in_range = in_range.where(self.after(after))
        source = list(dict.fromkeys(self._source_key(tuple(r)) for r in conn.execute(in_range)))
        ver_key = [versions.c[k] for k in self._source_columns]
        return sa.select(*ver_key).where(sa.tuple_(*ver_key).in_(source)).order_by(*ver_key)

    def encode_key(self, key: Key) -> str:
        """``key`` as kept-attributes JSON (the job row's ``after_key``)."""
        return encode_attributes(dict(zip(self.mapping.key, key, strict=True)))

    def decode_key(self, text: str) -> Key:
        """The inverse of :meth:`encode_key`."""
        values = decode_attributes(text)
        return tuple(values[k] for k in self.mapping.key)

    def letter_key(self, payload: bytes) -> Key:
        """The key a backfill dead letter names."""
        values = unmarshal(orjson.loads(payload)["key"])
        return tuple(values[k] for k in self.mapping.key)


def _jsonb(column: sa.Column[Any]) -> bool:
    return isinstance(column.type, pg.JSONB)


def _refused(exc: BaseException) -> bool:
    """PostgreSQL refused a row (a trigger, a constraint), not the transaction as a whole."""
    return is_database_error(exc) and classify(exc) == "poison"
