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
from ddbcdc.tables import VERSION_COLUMNS, MappedTables, mapped_tables

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


#: The filter of statements that read every row of their batch.
_EVERY_ROW = sa.true()
#: Fields of the batch document that are not live table columns.
_BATCH_ONLY = (
    sa.column("_ddbcdc_op", sa.Text()),
    sa.column("_ddbcdc_newest", sa.Boolean()),
    sa.column("_ddbcdc_log", sa.Boolean()),
)


def _records(columns: Sequence[sa.ColumnClause[Any] | None]) -> sa.TableValuedAlias:
    """``json_to_recordset(CAST(:rows AS JSON)) AS v(c0 t0, ...)``: the batch as one parameter.

    One JSON document per statement is the cheapest way found to ship a batch: orjson
    serializes it in C and PostgreSQL parses it in one go (arrays bound per column cost 3x
    more in the driver's array dumper).
    """
    rows = sa.cast(sa.bindparam("rows", type_=sa.Text()), pg.JSON())
    return (
        sa.func.json_to_recordset(rows)
        .table_valued(*[sa.column(c.name, _plain_type(c.type)) for c in columns if c is not None])
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


def _newer_exists(table: sa.Table, v: Any, key: Sequence[str]) -> sa.Exists:
    """``EXISTS`` a row of ``table`` with the key of a batch row and a newer version."""
    return (
        sa.select(sa.literal(1))
        .where(_key_match(table, v, key), _version(table.c) > _version(v.c))
        .exists()
    )


def _insert_unless_older(
    table: sa.Table, names: list[str], rows: sa.Select[Any], key: list[str], stamp: str
) -> sa.Insert:
    """Insert ``rows``; on a key conflict overwrite only an older version, setting ``stamp``."""
    stmt = pg.insert(table).from_select(names, rows)
    updates: dict[str, Any] = {n: stmt.excluded[n] for n in names if n not in key}
    updates[stamp] = sa.func.now()
    return stmt.on_conflict_do_update(
        index_elements=key,
        set_=updates,
        where=_version(table.c) < _version(stmt.excluded),
    ).execution_options(preserve_rowcount=True)


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
        self._upsert = self._build_upsert(self._source(self._upsert_names()))
        self._delete_live, self._tombstone = self._build_delete(self._source(self._delete_names()))
        logged = tables.changes is not None
        self._log = self._build_log(self._source(self._log_names())) if logged else None
        self._batch = self._build_batch()
        self._prune = sa.delete(tables.tombstones).where(
            tables.tombstones.c._ddbcdc_version_us < sa.bindparam("cutoff_us")
        )

    def _upsert_names(self) -> list[str]:
        return [*self._columns, *VERSION_COLUMNS]

    def _delete_names(self) -> list[str]:
        return [*self._key, *VERSION_COLUMNS]

    def _log_fixed(self) -> list[str]:
        return ["_ddbcdc_event_id", "_ddbcdc_op", *self._key, *VERSION_COLUMNS[:2]]

    def _log_names(self) -> list[str]:
        return [*self._log_fixed(), *self._values]

    def _source(self, names: Sequence[str]) -> sa.TableValuedAlias:
        """The batch parameter as rows of the named columns (live table types)."""
        extra = {c.name: c for c in _BATCH_ONLY}
        return _records([self.tables.live.c.get(n, extra.get(n)) for n in names])

    def _build_upsert(self, v: Any, only: Any = _EVERY_ROW) -> sa.Insert:
        live, tomb = self.tables.live, self.tables.tombstones
        names = self._upsert_names()
        rows = sa.select(*[v.c[n] for n in names]).where(only, ~_newer_exists(tomb, v, self._key))
        return _insert_unless_older(live, names, rows, self._key, "_ddbcdc_updated_at")

    def _build_delete(self, v: Any, only: Any = _EVERY_ROW) -> tuple[sa.Delete, sa.Insert]:
        live, tomb = self.tables.live, self.tables.tombstones
        names = self._delete_names()
        delete_live = sa.delete(live).where(
            only, _key_match(live, v, self._key), _version(live.c) < _version(v.c)
        )
        rows = sa.select(*[v.c[n] for n in names]).where(only, ~_newer_exists(live, v, self._key))
        tombstone = _insert_unless_older(tomb, names, rows, self._key, "_ddbcdc_deleted_at")
        return delete_live, tombstone

    def _build_log(self, v: Any, only: Any = _EVERY_ROW) -> sa.Insert:
        changes = self.tables.changes
        assert changes is not None
        fixed = self._log_fixed()
        pairs: list[Any] = []
        for name in self._columns:
            pairs += [sa.literal(name, sa.Text()), v.c[name]]
        row = sa.case(
            (v.c._ddbcdc_op == "REMOVE", sa.null()),
            else_=sa.func.jsonb_build_object(*pairs),
        )
        rows = sa.select(*[v.c[n] for n in fixed], row).where(only)
        stmt = pg.insert(changes).from_select([*fixed, "_ddbcdc_row"], rows)
        return stmt.on_conflict_do_nothing(index_elements=["_ddbcdc_event_id"])

    def _build_batch(self) -> sa.Select[Any]:
        """Log, delete, tombstone and upsert in ONE statement reading the batch once.

        The batch holds each distinct change once, flagged ``_ddbcdc_log`` (goes to the
        change log) and ``_ddbcdc_newest`` (the newest change of its key). Deletes and
        upserts touch disjoint keys (one newest change per key), so running them as
        data-modifying CTEs on one snapshot gives what running them one after another does.
        """
        changes = self.tables.changes
        names = [*self._columns, *VERSION_COLUMNS, *(c.name for c in _BATCH_ONLY)]
        v = sa.select(*self._source(names).c).cte("v")
        newest = v.c._ddbcdc_newest
        removes, writes = (
            newest & (v.c._ddbcdc_op == "REMOVE"),
            newest & (v.c._ddbcdc_op != "REMOVE"),
        )
        delete_live, tombstone = self._build_delete(v, removes)
        tombstoned = tombstone.returning(sa.literal(1)).cte("tombstoned")
        upserted = self._build_upsert(v, writes).returning(sa.literal(1)).cte("upserted")
        side = [delete_live.cte("deleted")]
        if changes is not None:
            side.append(self._build_log(v, v.c._ddbcdc_log).cte("logged"))
        count = sa.func.count()
        return sa.select(
            sa.select(count).select_from(tombstoned).scalar_subquery().label("deleted"),
            sa.select(count).select_from(upserted).scalar_subquery().label("upserted"),
        ).add_cte(*side)

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

    def _doc(self, c: CleanChange) -> dict[str, Any]:
        """One change as an object of the batch document (row or key, version, op)."""
        doc = dict(c.row) if c.row is not None else dict(zip(self._key, c.key, strict=True))
        doc["_ddbcdc_version_us"] = c.approximate_creation_us
        doc["_ddbcdc_sequence"] = None if c.sequence is None else str(c.sequence)
        doc["_ddbcdc_event_id"] = c.event_id
        doc["_ddbcdc_op"] = c.event_name
        for name, encode in self._encoders:
            if name in doc:
                doc[name] = encode(doc[name])
        return doc

    def apply_batch(self, conn: sa.Connection, changes: Sequence[CleanChange]) -> ApplyCounts:
        """Log (if enabled), collapse and apply a batch of this table in one statement.

        Does what :meth:`log`, :func:`collapse` and :meth:`apply` do one after another, with
        the batch shipped and parsed once.

        Returns:
            Counts where ``stale`` includes changes superseded within the batch.
        """
        logged = list({c.event_id: c for c in changes}.values()) if self._log is not None else []
        newest = collapse(changes)
        in_log, chosen = {id(c) for c in logged}, {id(c) for c in newest}
        docs = []
        for c in [*logged, *(c for c in newest if id(c) not in in_log)]:
            doc = self._doc(c)
            if id(c) in in_log:
                doc["_ddbcdc_log"] = True
            if id(c) in chosen:
                doc["_ddbcdc_newest"] = True
            docs.append(doc)
        params = {"rows": orjson.dumps(docs).decode()}
        deleted, upserted = conn.execute(self._batch, params).one()
        return ApplyCounts(upserted, deleted, len(changes) - upserted - deleted)

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
            total.add(self.writers[name].apply_batch(conn, group))
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
