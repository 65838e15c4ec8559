"""Cleansed changes -> PostgreSQL, inside the caller's transaction (SQLAlchemy Core).

A batch is first collapsed in Python to the newest change per key (:func:`collapse`). Then,
per mapped table, a handful of set-based statements read the whole batch from one bound
JSON document, ``json_to_recordset(:rows) AS v(col type, ...)`` (so a statement costs one
round trip whatever the batch size):

1. change log (when enabled): ``INSERT ... ON CONFLICT (event id) DO NOTHING``;
2. deletes: ``DELETE`` live rows older than the delete, then upsert the tombstone unless a
   newer live row exists, keeping the newer of old and new tombstone;
3. upserts: ``INSERT ... ON CONFLICT (key) DO UPDATE ... WHERE live version < new version``,
   skipping keys whose tombstone is newer (no resurrection).

A version is ``(_ddbcdc_version_us, coalesce(_ddbcdc_sequence, -1), _ddbcdc_event_id)``
compared as a row value, event ids in the "C" collation: exactly the order of
:data:`ddbcdc.cleanse.Version` in Python. Applying the same changes in any order, any number
of times, in any batch split converges to the state of the newest change per key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from ddbcdc.cleanse import CleanChange
from ddbcdc.mapping import TableMapping
from ddbcdc.tables import MappedTables, mapped_tables

__all__ = ["ApplyCounts", "Materializer", "TableWriter", "collapse"]


@dataclass
class ApplyCounts:
    """What a batch did: rows written, keys deleted, changes that lost to newer ones."""

    upserted: int = 0
    deleted: int = 0
    stale: int = 0

    def add(self, other: ApplyCounts) -> None:
        """Add another batch's counts to these."""
        self.upserted += other.upserted
        self.deleted += other.deleted
        self.stale += other.stale


def collapse(changes: Iterable[CleanChange]) -> list[CleanChange]:
    """The newest change per (mapping, key); input order and duplicates do not matter."""
    newest: dict[tuple[str, tuple[Any, ...]], CleanChange] = {}
    for change in changes:
        slot = (change.mapping.name, change.key)
        held = newest.get(slot)
        if held is None or held.version < change.version:
            newest[slot] = change
    return list(newest.values())


def _plain_type(type_: sa.types.TypeEngine[Any]) -> sa.types.TypeEngine[Any]:
    # Collations are applied where versions are compared, not in the record definition.
    return sa.Text() if isinstance(type_, sa.Text) else type_


def _records(columns: Sequence[sa.Column[Any]]) -> sa.TableValuedAlias:
    """``json_to_recordset(CAST(:rows AS JSON)) AS v(c0 t0, ...)``: the batch as one parameter.

    One JSON document per statement is the cheapest way found to ship a batch: orjson
    serializes it in C and PostgreSQL parses it in one go (arrays bound per column cost 3x
    more in the driver's array dumper).
    """
    rows = sa.cast(sa.bindparam("rows", type_=sa.Text()), pg.JSON())
    return (
        sa.func.json_to_recordset(rows)
        .table_valued(*[sa.column(c.name, _plain_type(c.type)) for c in columns])
        .render_derived(name="v", with_types=True)
    )


def _encoder(type_: sa.types.TypeEngine[Any]) -> Callable[[Any], Any] | None:
    """How a cleansed value of ``type_`` goes into the JSON batch (None: as it is)."""
    if isinstance(type_, pg.JSONB):
        return lambda v: None if v is None else orjson.Fragment(v)
    if isinstance(type_, sa.LargeBinary):
        return lambda v: None if v is None else "\\x" + v.hex()
    if type(type_) is sa.Numeric:
        return lambda v: None if v is None else str(v)
    return None


def _version(cols: Any) -> sa.Tuple:
    """The row-value version of a column collection (``table.c`` or ``excluded``)."""
    return sa.tuple_(
        cols._ddbcdc_version_us,
        sa.func.coalesce(cols._ddbcdc_sequence, -1),
        cols._ddbcdc_event_id.collate("C"),
    )


def _key_match(left: Any, right: Any, key: Sequence[str]) -> sa.ColumnElement[bool]:
    return sa.and_(*[left.c[k] == right.c[k] for k in key])


class TableWriter:
    """Prepared statements of one mapped table; :meth:`apply` runs a collapsed batch."""

    def __init__(self, tables: MappedTables) -> None:
        self.tables = tables
        mapping = tables.mapping
        self._key = list(mapping.key)
        self._columns = [c.name for c in mapping.columns]
        self._values = [n for n in self._columns if n not in mapping.key]
        encoders = ((c.name, _encoder(tables.live.c[c.name].type)) for c in mapping.columns)
        self._encoders = [(n, e) for n, e in encoders if e is not None]
        self._key_encoders = [(n, e) for n, e in self._encoders if n in self._key]
        self._upsert = self._build_upsert()
        self._delete_live, self._tombstone = self._build_delete()
        self._log = self._build_log() if tables.changes is not None else None
        self._prune = sa.delete(tables.tombstones).where(
            tables.tombstones.c._ddbcdc_version_us < sa.bindparam("cutoff_us")
        )

    def _build_upsert(self) -> sa.Insert:
        live, tomb = self.tables.live, self.tables.tombstones
        names = [*self._columns, "_ddbcdc_version_us", "_ddbcdc_sequence", "_ddbcdc_event_id"]
        v = _records([live.c[n] for n in names])
        newer_tombstone = (
            sa.select(sa.literal(1))
            .where(_key_match(tomb, v, self._key), _version(tomb.c) > _version(v.c))
            .exists()
        )
        rows = sa.select(*[v.c[n] for n in names]).where(~newer_tombstone)
        stmt = pg.insert(live).from_select(names, rows)
        updates: dict[str, Any] = {n: stmt.excluded[n] for n in names if n not in self._key}
        updates["_ddbcdc_updated_at"] = sa.func.now()
        return stmt.on_conflict_do_update(
            index_elements=self._key,
            set_=updates,
            where=_version(live.c) < _version(stmt.excluded),
        ).execution_options(preserve_rowcount=True)

    def _build_delete(self) -> tuple[sa.Delete, sa.Insert]:
        live, tomb = self.tables.live, self.tables.tombstones
        names = [*self._key, "_ddbcdc_version_us", "_ddbcdc_sequence", "_ddbcdc_event_id"]
        v = _records([tomb.c[n] for n in names])
        delete_live = sa.delete(live).where(
            _key_match(live, v, self._key), _version(live.c) < _version(v.c)
        )
        newer_live = (
            sa.select(sa.literal(1))
            .where(_key_match(live, v, self._key), _version(live.c) > _version(v.c))
            .exists()
        )
        rows = sa.select(*[v.c[n] for n in names]).where(~newer_live)
        stmt = pg.insert(tomb).from_select(names, rows)
        updates: dict[str, Any] = {n: stmt.excluded[n] for n in names if n not in self._key}
        updates["_ddbcdc_deleted_at"] = sa.func.now()
        tombstone = stmt.on_conflict_do_update(
            index_elements=self._key,
            set_=updates,
            where=_version(tomb.c) < _version(stmt.excluded),
        ).execution_options(preserve_rowcount=True)
        return delete_live, tombstone

    def _build_log(self) -> sa.Insert:
        changes = self.tables.changes
        assert changes is not None
        live = self.tables.live
        fixed = ["_ddbcdc_event_id", "_ddbcdc_op", *self._key, "_ddbcdc_version_us"]
        fixed += ["_ddbcdc_sequence"]
        v = _records([changes.c[n] for n in fixed] + [live.c[n] for n in self._values])
        pairs: list[Any] = []
        for name in self._columns:
            pairs += [sa.literal(name, sa.Text()), v.c[name]]
        row = sa.case(
            (v.c._ddbcdc_op == "REMOVE", sa.null()),
            else_=sa.func.jsonb_build_object(*pairs),
        )
        rows = sa.select(*[v.c[n] for n in fixed], row)
        stmt = pg.insert(changes).from_select([*fixed, "_ddbcdc_row"], rows)
        return stmt.on_conflict_do_nothing(index_elements=["_ddbcdc_event_id"])

    def _rows(self, changes: Sequence[CleanChange], with_values: bool) -> dict[str, str]:
        """The ``rows`` parameter: one JSON object per change, keyed by column name."""
        key = self._key
        encoders = self._encoders if with_values else self._key_encoders
        rows = []
        for c in changes:
            row = dict(c.row) if with_values and c.row else dict(zip(key, c.key, strict=True))
            row["_ddbcdc_version_us"] = c.approximate_creation_us
            row["_ddbcdc_sequence"] = None if c.sequence is None else str(c.sequence)
            row["_ddbcdc_event_id"] = c.event_id
            if self._log is not None and with_values:
                row["_ddbcdc_op"] = c.event_name
                if c.row is None:
                    row.update(zip(key, c.key, strict=True))
            for name, encode in encoders:
                if name in row:
                    row[name] = encode(row[name])
            rows.append(row)
        return {"rows": orjson.dumps(rows).decode()}

    def log(self, conn: sa.Connection, changes: Sequence[CleanChange]) -> None:
        """Append every distinct change (by event id) to the change log, if enabled."""
        if self._log is None or not changes:
            return
        unique = list({c.event_id: c for c in changes}.values())
        conn.execute(self._log, self._rows(unique, True))

    def apply(self, conn: sa.Connection, changes: Sequence[CleanChange]) -> ApplyCounts:
        """Apply a batch already collapsed to one change per key.

        Returns:
            The rows upserted, keys deleted and changes that lost to a newer version.
        """
        counts = ApplyCounts()
        deletes = [c for c in changes if c.row is None]
        upserts = [c for c in changes if c.row is not None]
        if deletes:
            params = self._rows(deletes, False)
            conn.execute(self._delete_live, params)
            counts.deleted = conn.execute(self._tombstone, params).rowcount
        if upserts:
            counts.upserted = conn.execute(self._upsert, self._rows(upserts, True)).rowcount
        counts.stale = len(changes) - counts.upserted - counts.deleted
        return counts

    def prune(self, conn: sa.Connection, *, cutoff_us: int) -> int:
        """Delete tombstones whose version is older than ``cutoff_us``; returns how many."""
        return conn.execute(self._prune, {"cutoff_us": cutoff_us}).rowcount


class Materializer:
    """Applies cleansed changes of any mapped table inside a caller's transaction.

    Args:
        mappings: the table mappings.
        metadata: where to build their tables (a fresh MetaData when None).
    """

    def __init__(
        self, mappings: Sequence[TableMapping], *, metadata: sa.MetaData | None = None
    ) -> None:
        self.tables = mapped_tables(mappings, metadata)
        self.writers = {name: TableWriter(t) for name, t in self.tables.items()}

    def apply(self, conn: sa.Connection, changes: Sequence[CleanChange]) -> ApplyCounts:
        """Log, collapse and apply ``changes`` (any order, duplicates allowed).

        Returns:
            Counts where ``stale`` includes changes superseded within the batch.
        """
        by_mapping: dict[str, list[CleanChange]] = {}
        for change in changes:
            by_mapping.setdefault(change.mapping.name, []).append(change)
        total = ApplyCounts()
        for name, group in by_mapping.items():
            writer = self.writers[name]
            writer.log(conn, group)
            newest = collapse(group)
            counts = writer.apply(conn, newest)
            counts.stale += len(group) - len(newest)
            total.add(counts)
        return total

    def apply_isolated(
        self, conn: sa.Connection, changes: Sequence[CleanChange]
    ) -> tuple[ApplyCounts, list[tuple[CleanChange, Exception]]]:
        """Like :meth:`apply`, one change at a time, each in a savepoint.

        The slow path after PostgreSQL rejected a batch: changes it rejects again are
        returned with their error instead of failing the transaction.
        """
        total = ApplyCounts()
        failed: list[tuple[CleanChange, Exception]] = []
        failed_ids: set[str] = set()
        for change in changes:
            writer = self.writers[change.mapping.name]
            try:
                with conn.begin_nested():
                    writer.log(conn, [change])
            except (sa.exc.DataError, sa.exc.IntegrityError) as exc:
                failed.append((change, exc))
                failed_ids.add(change.event_id)
        applicable = [c for c in changes if c.event_id not in failed_ids]
        newest = collapse(applicable)
        for change in newest:
            try:
                with conn.begin_nested():
                    total.add(self.writers[change.mapping.name].apply(conn, [change]))
            except (sa.exc.DataError, sa.exc.IntegrityError) as exc:
                failed.append((change, exc))
        total.stale += len(applicable) - len(newest)
        return total, failed

    def prune_tombstones(self, conn: sa.Connection, *, cutoff_us: int) -> int:
        """Prune tombstones older than ``cutoff_us`` (epoch microseconds) in every table."""
        return sum(w.prune(conn, cutoff_us=cutoff_us) for w in self.writers.values())
