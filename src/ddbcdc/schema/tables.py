"""The PostgreSQL tables of each table mapping, as SQLAlchemy Core tables: the single source
of truth of their schema (the bookkeeping tables: :mod:`ddbcdc.schema.bookkeeping`).

Built by :func:`mapped_tables`:

- the live table (``mapping.target_table``): the mapped columns, the kept ``jsonb`` columns
  of ``extra`` (unmapped attributes, whole item; NULL in a row written before the column
  existed), then the version of the change that wrote the row in ``_ddbcdc_version_us``
  (epoch microseconds),
  ``_ddbcdc_sequence`` (numeric, NULL when unknown) and ``_ddbcdc_event_id`` (text, "C"
  collation so PostgreSQL orders it as Python does), and ``_ddbcdc_updated_at``. With hard
  deletes (the default) it holds exactly the live items; a mapping that keeps deleted rows
  (:mod:`ddbcdc.schema.deletes`) keeps them here too, and with soft deletes the table has
  ``_ddbcdc_deleted_at`` (NULL on a live item). :meth:`MappedTables.current` tells them apart.
- ``ddbcdc_versions__<target>``: one row per key ever applied, live or deleted: the version
  of the newest change applied to that key and whether it was a REMOVE (then the row is the
  key's tombstone). Every write to a key goes through this row under its lock, which is
  what orders concurrent writers; deleted rows are pruned below the prune floor. Of a
  routed mapping (``ddbcdc_versions__<name>``): one row per DynamoDB key, whichever route
  holds it, with ``_ddbcdc_route`` (the route table holding its live row) and
  ``_ddbcdc_prev_route``; each route has a live table (and change log) of its own.
- ``ddbcdc_changes__<target>`` (only with ``"change_log": true``): every distinct change
  (by event id), with its op, version, key, the cleansed row as JSONB and, for a REMOVE, its
  cause in ``_ddbcdc_removed_by`` (``user``, ``ttl`` or ``unknown``; NULL otherwise, and in
  rows logged before revision ``0007``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from ddbcdc.schema.bookkeeping import bookkeeping_metadata, now_column
from ddbcdc.schema.mapping import TableMapping

__all__ = [
    "DELETED_AT",
    "REMOVED_BY",
    "VERSION_COLUMNS",
    "MappedTables",
    "column_type",
    "ensure_mapped_tables",
    "mapped_tables",
    "metadata_for",
]

#: Version columns shared by live, versions and change log tables.
VERSION_COLUMNS = ("_ddbcdc_version_us", "_ddbcdc_sequence", "_ddbcdc_event_id")
#: The live table's mark of a soft-deleted row: the time of the REMOVE (NULL: a live item).
DELETED_AT = "_ddbcdc_deleted_at"
#: The change log's cause of a REMOVE.
REMOVED_BY = "_ddbcdc_removed_by"

_TYPES: dict[str, sa.types.TypeEngine[Any]] = {
    "bigint": sa.BigInteger(),
    "integer": sa.Integer(),
    "smallint": sa.SmallInteger(),
    "numeric": sa.Numeric(),
    "text": sa.Text(),
    "boolean": sa.Boolean(),
    "bytea": pg.BYTEA(),
    "jsonb": pg.JSONB(),
    "timestamptz": sa.DateTime(timezone=True),
    "date": sa.Date(),
}


def column_type(name: str) -> sa.types.TypeEngine[Any]:
    """The SQLAlchemy type of a mapping column type name."""
    return _TYPES[name]


def _version_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("_ddbcdc_version_us", sa.BigInteger, nullable=False),
        sa.Column("_ddbcdc_sequence", sa.Numeric),
        sa.Column("_ddbcdc_event_id", sa.Text(collation="C"), nullable=False),
    ]


def _live_table(mapping: TableMapping, metadata: sa.MetaData) -> sa.Table:
    key = set(mapping.key)
    columns = [
        # A key is the item's own: never a generated default (no serial for an integer key).
        sa.Column(
            c.name,
            column_type(c.type),
            primary_key=c.name in key,
            nullable=not c.required,
            autoincrement=False,
        )
        for c in mapping.columns
    ]
    columns += [sa.Column(name, pg.JSONB()) for name in mapping.stored_columns[len(columns) :]]
    marked = [sa.Column(DELETED_AT, sa.DateTime(timezone=True))] if mapping.policy.marks else []
    return sa.Table(
        mapping.target_table,
        metadata,
        *columns,
        *_version_columns(),
        now_column("_ddbcdc_updated_at"),
        *marked,
    )


def _versions_table(mapping: TableMapping, metadata: sa.MetaData) -> sa.Table:
    routed = (
        # Of a routed mapping: the route holding the key's live row (NULL: none), and the one
        # that held it before the change the row records (what a REMOVE or a move empties).
        [sa.Column("_ddbcdc_route", sa.Text), sa.Column("_ddbcdc_prev_route", sa.Text)]
        if mapping.routes
        else []
    )
    table = sa.Table(
        mapping.versions_table,
        metadata,
        *[
            sa.Column(c.name, column_type(c.type), primary_key=True, autoincrement=False)
            for c in mapping.key_columns
        ],
        *_version_columns(),
        sa.Column("_ddbcdc_deleted", sa.Boolean, nullable=False),
        now_column("_ddbcdc_changed_at"),
        *routed,
    )
    # Pruning reads the tombstones (deleted rows) only. On the key, which never changes: an
    # index on the version would make every update of a versions row a non-HOT one.
    sa.Index(
        f"{mapping.versions_table}_d_idx",
        *[table.c[k] for k in mapping.key],
        postgresql_where=table.c._ddbcdc_deleted,
    )
    return table


def _change_log_table(mapping: TableMapping, metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        mapping.change_log_table,
        metadata,
        sa.Column("_ddbcdc_event_id", sa.Text(collation="C"), primary_key=True),
        sa.Column("_ddbcdc_op", sa.Text, nullable=False),
        *[sa.Column(c.name, column_type(c.type), nullable=False) for c in mapping.key_columns],
        sa.Column("_ddbcdc_version_us", sa.BigInteger, nullable=False),
        sa.Column("_ddbcdc_sequence", sa.Numeric),
        sa.Column("_ddbcdc_row", pg.JSONB),
        now_column("_ddbcdc_received_at"),
        sa.Column(REMOVED_BY, sa.Text),
    )


class MappedTables:
    """The tables of one mapping: ``live``, ``versions`` and optional ``changes``.

    Of a routed mapping: ``versions`` (one row per DynamoDB key, naming the route of its live
    row) and, per route, ``routes``: the route's ``live`` and ``changes`` tables with that
    same ``versions`` table; a routed mapping has no ``live`` table of its own.
    """

    __slots__ = ("_live", "_shared", "changes", "mapping", "routes", "versions")

    def __init__(
        self, mapping: TableMapping, metadata: sa.MetaData, *, versions: sa.Table | None = None
    ) -> None:
        self.mapping = mapping
        routed = bool(mapping.routes)
        self._live = None if routed else _live_table(mapping, metadata)
        self.versions = versions if versions is not None else _versions_table(mapping, metadata)
        self.changes = _change_log_table(mapping, metadata) if mapping.change_log else None
        self.routes = tuple(
            MappedTables(r.mapping, metadata, versions=self.versions) for r in mapping.routes
        )
        self._shared = versions is not None

    @property
    def live(self) -> sa.Table:
        """The table of live rows (of a plain mapping, or of a route)."""
        if self._live is None:
            raise TypeError(f"routed mapping {self.mapping.name!r} has a live table per route")
        return self._live

    def current(self) -> sa.ColumnElement[bool] | None:
        """Where a row of the live table is a live item (None: every row is one, as with hard
        deletes). A deleted row that stays is marked (soft) or, kept after a TTL expiry, has
        no live versions row: its key's row there is a tombstone, or pruned."""
        policy = self.mapping.policy
        if policy.keeps:
            ver, live = self.versions, self.live
            match = [ver.c[k] == live.c[k] for k in self.mapping.key]
            return sa.exists().where(*match, ~ver.c._ddbcdc_deleted)
        if policy.marks:
            return self.live.c[DELETED_AT].is_(None)
        return None

    @property
    def all(self) -> tuple[sa.Table, ...]:
        """Every table of the mapping, live table first (a routed mapping's: the versions
        table, then each route's)."""
        if self.routes:
            return (self.versions, *(t for r in self.routes for t in r.all))
        extra = (self.changes,) if self.changes is not None else ()
        own = () if self._shared else (self.versions,)
        return (self.live, *own, *extra)


def mapped_tables(
    mappings: Sequence[TableMapping], metadata: sa.MetaData | None = None
) -> dict[str, MappedTables]:
    """Build the tables of each mapping (keyed by mapping name) into ``metadata``."""
    metadata = metadata if metadata is not None else sa.MetaData()
    return {m.name: MappedTables(m, metadata) for m in mappings}


def metadata_for(mappings: Sequence[TableMapping]) -> sa.MetaData:
    """A MetaData with the bookkeeping tables plus the tables of ``mappings``."""
    metadata = sa.MetaData()
    for table in bookkeeping_metadata.tables.values():
        table.to_metadata(metadata)
    mapped_tables(mappings, metadata)
    return metadata


_DIALECT = pg.psycopg.dialect()  # type: ignore[no-untyped-call]


def _type_name(type_: sa.types.TypeEngine[Any]) -> str:
    compiled = type_.compile(dialect=_DIALECT)
    return compiled.split(" COLLATE ")[0]


def _differences(expected: sa.Table, conn: sa.Connection) -> list[str]:
    inspector = sa.inspect(conn)
    found = {c["name"]: c for c in inspector.get_columns(expected.name)}
    problems = []
    for column in expected.columns:
        have = found.pop(column.name, None)
        if have is None:
            problems.append(f"column {column.name!r} is missing")
            continue
        want_type, have_type = _type_name(column.type), _type_name(have["type"])
        if want_type != have_type:
            problems.append(f"column {column.name!r} is {have_type}, mapping says {want_type}")
        if bool(have["nullable"]) != bool(column.nullable):
            want = "NULL" if column.nullable else "NOT NULL"
            problems.append(f"column {column.name!r} nullability differs (mapping: {want})")
    problems += [f"column {name!r} is not in the mapping" for name in found]
    pk = inspector.get_pk_constraint(expected.name)["constrained_columns"]
    if list(pk) != [c.name for c in expected.primary_key.columns]:
        problems.append(
            f"primary key is {pk}, mapping says {list(expected.primary_key.columns.keys())}"
        )
    return problems


def ensure_mapped_tables(conn: sa.Connection, mappings: Sequence[TableMapping]) -> list[str]:
    """Create the missing tables of ``mappings``; check that existing ones match.

    A table whose columns differ from its mapping is never altered here; ``ddbcdc migrate``
    plans such changes with :mod:`ddbcdc.migrate.plan` instead.

    Returns:
        The names of the tables created.

    Raises:
        ConfigurationError: an existing table differs from its mapping (lists how).
    """
    from ddbcdc.errors import ConfigurationError

    metadata = sa.MetaData()
    existing = set(sa.inspect(conn).get_table_names())
    created: list[str] = []
    for tables in mapped_tables(mappings, metadata).values():
        for table in tables.all:
            if table.name not in existing:
                table.create(conn)
                created.append(table.name)
                continue
            problems = _differences(table, conn)
            if problems:
                where = tables.mapping.path or tables.mapping.name
                raise ConfigurationError(
                    f"table {table.name!r} does not match mapping {where}: "
                    + "; ".join(problems)
                    + " (write a migration for the change)"
                )
    return created
