"""Cleansed changes -> PostgreSQL, inside the caller's transaction (SQLAlchemy Core).

A batch is first collapsed in Python to the newest change per key (:func:`collapse`). Then,
per mapped table, a handful of set-based statements read the whole batch from
``unnest(array, array, ...)`` (one bound array per column, so a statement costs the same
whatever the batch size):

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

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

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


def _bind_type(type_: sa.types.TypeEngine[Any]) -> sa.types.TypeEngine[Any]:
    # JSONB values arrive as exact JSON text: bind them as text so nothing re-encodes them.
    # Collations are applied where versions are compared, not to the arrays.
    if isinstance(type_, pg.JSONB | sa.Text):
        return sa.Text()
    return type_


def _unnest(columns: Sequence[sa.Column[Any]]) -> sa.TableValuedAlias:
    """``unnest(CAST(:p0 AS t0[]), ...) AS v(c0, ...)``: one array parameter per column."""
    args = [
        sa.cast(
            sa.bindparam(f"p{i}", type_=pg.ARRAY(_bind_type(c.type))),
            pg.ARRAY(c.type if isinstance(c.type, pg.JSONB) else _bind_type(c.type)),
        )
        for i, c in enumerate(columns)
    ]
    return (
        sa.func.unnest(*args)
        .table_valued(*[sa.column(c.name, c.type) for c in columns])
        .render_derived(name="v")
    )


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
        self._upsert = self._build_upsert()
        self._delete_live, self._tombstone = self._build_delete()
        self._log = self._build_log() if tables.changes is not None else None
        self._prune = sa.delete(tables.tombstones).where(
            tables.tombstones.c._ddbcdc_version_us < sa.bindparam("cutoff_us")
        )

    def _build_upsert(self) -> sa.Insert:
        live, tomb = self.tables.live, self.tables.tombstones
        names = [*self._columns, "_ddbcdc_version_us", "_ddbcdc_sequence", "_ddbcdc_event_id"]
        v = _unnest([live.c[n] for n in names])
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
        v = _unnest([tomb.c[n] for n in names])
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
        v = _unnest([changes.c[n] for n in fixed] + [live.c[n] for n in self._values])
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

    @staticmethod
    def _versions(changes: Sequence[CleanChange]) -> list[list[Any]]:
        return [
            [c.approximate_creation_us for c in changes],
            [c.sequence for c in changes],
            [c.event_id for c in changes],
        ]

    @staticmethod
    def _params(arrays: list[list[Any]]) -> dict[str, list[Any]]:
        return {f"p{i}": a for i, a in enumerate(arrays)}

    def log(self, conn: sa.Connection, changes: Sequence[CleanChange]) -> None:
        """Append every distinct change (by event id) to the change log, if enabled."""
        if self._log is None or not changes:
            return
        unique = list({c.event_id: c for c in changes}.values())
        arrays: list[list[Any]] = [[c.event_id for c in unique], [c.event_name for c in unique]]
        arrays += [[c.key[i] for c in unique] for i in range(len(self._key))]
        arrays += self._versions(unique)[:2]
        arrays += [[c.row[n] if c.row else None for c in unique] for n in self._values]
        conn.execute(self._log, self._params(arrays))

    def apply(self, conn: sa.Connection, changes: Sequence[CleanChange]) -> ApplyCounts:
        """Apply a batch already collapsed to one change per key.

        Returns:
            The rows upserted, keys deleted and changes that lost to a newer version.
        """
        counts = ApplyCounts()
        deletes = [c for c in changes if c.row is None]
        upserts = [c for c in changes if c.row is not None]
        if deletes:
            keys = [[c.key[i] for c in deletes] for i in range(len(self._key))]
            params = self._params(keys + self._versions(deletes))
            conn.execute(self._delete_live, params)
            counts.deleted = conn.execute(self._tombstone, params).rowcount
        if upserts:
            rows = [[c.row[n] for c in upserts if c.row] for n in self._columns]
            params = self._params(rows + self._versions(upserts))
            counts.upserted = conn.execute(self._upsert, params).rowcount
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
