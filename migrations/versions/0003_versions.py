"""One version row per key; stream-time tombstone pruning; monotonic shard progress.

- Every ``ddbcdc_tombstones__<t>`` (the shipped mapping's and those ``ddbcdc migrate`` created
  for other mappings) becomes ``ddbcdc_versions__<t>``: a row per key, live or deleted, with
  the version of the newest change applied to it. It is filled from the tombstones (deleted)
  and the live rows (not deleted), the newer winning where a key has both; a live row older
  than its key's tombstone (left by two overlapping transactions) is deleted. A row that
  carries its tombstone's own version is one a later schema kept for a deleted item (soft
  deletes: met when this revision runs up again after going down): it stays.
- ``ddbcdc_dead_letters`` gains ``version_us`` (the version of a record that decoded) and
  ``discarded_at``; ``ddbcdc_shard_progress`` gains ``max_version_us`` (the shard's position in
  stream time) and ``ended_at``.
- New: ``ddbcdc_prune_state`` (the prune floor per table) and ``ddbcdc_prune_holds``.

Going down, each versions table becomes a tombstones table again, except a routed mapping's
(it has ``_ddbcdc_route``): its keys' rows live in its routes' tables, from which no upgrade
could rebuild it, and no schema before this revision knows routes, so it is left alone, like
the tables ``ddbcdc migrate`` created for the mapping, and is there as it was when this
revision runs up again. ``ddbcdc_prune_state`` is kept too once a floor was raised: the
tombstones pruned below it are gone from the tables left, so without it an old change of a
pruned deleted key would be applied after the upgrade (the item back); going up again
keeps it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD = "ddbcdc_tombstones__"
_NEW = "ddbcdc_versions__"
_VERSION = ("_ddbcdc_version_us", "_ddbcdc_sequence", "_ddbcdc_event_id")


def _tables_with_prefix(prefix: str) -> list[str]:
    names = sa.inspect(op.get_bind()).get_table_names()
    return sorted(n for n in names if n.startswith(prefix))


def _reflect(name: str) -> sa.Table:
    return sa.Table(name, sa.MetaData(), autoload_with=op.get_bind())


def _version_tuple(cols: sa.ColumnCollection[str, sa.Column[object]]) -> sa.Tuple:
    return sa.tuple_(
        cols._ddbcdc_version_us,
        sa.func.coalesce(cols._ddbcdc_sequence, -1),
        cols._ddbcdc_event_id.collate("C"),
    )


def _create_versions(target: str, key: list[sa.Column[object]]) -> sa.Table:
    name = _NEW + target
    op.create_table(
        name,
        *[sa.Column(c.name, c.type, primary_key=True) for c in key],
        sa.Column("_ddbcdc_version_us", sa.BigInteger, nullable=False),
        sa.Column("_ddbcdc_sequence", sa.Numeric),
        sa.Column("_ddbcdc_event_id", sa.Text(collation="C"), nullable=False),
        sa.Column("_ddbcdc_deleted", sa.Boolean, nullable=False),
        sa.Column(
            "_ddbcdc_changed_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
    )
    op.create_index(
        f"{name}_d_idx",
        name,
        [c.name for c in key],
        postgresql_where=sa.text("_ddbcdc_deleted"),
    )
    return _reflect(name)


def _convert(tombstone_name: str) -> None:
    target = tombstone_name.removeprefix(_OLD)
    tomb = _reflect(tombstone_name)
    key = list(tomb.primary_key.columns)
    names = [c.name for c in key]
    versions = _create_versions(target, key)
    bind = op.get_bind()
    columns = [*names, *_VERSION, "_ddbcdc_deleted", "_ddbcdc_changed_at"]
    from_tomb = sa.select(
        *[tomb.c[n] for n in (*names, *_VERSION)], sa.true(), tomb.c._ddbcdc_deleted_at
    )
    bind.execute(sa.insert(versions).from_select(columns, from_tomb))
    if target in sa.inspect(bind).get_table_names():
        live = _reflect(target)
        from_live = sa.select(
            *[live.c[n] for n in (*names, *_VERSION)], sa.false(), live.c._ddbcdc_updated_at
        )
        stmt = pg.insert(versions).from_select(columns, from_live)
        bind.execute(
            stmt.on_conflict_do_update(
                index_elements=names,
                set_={c: stmt.excluded[c] for c in columns if c not in names},
                where=_version_tuple(versions.c) < _version_tuple(stmt.excluded),
            )
        )
        match = sa.and_(*[live.c[n] == versions.c[n] for n in names])
        older = _version_tuple(live.c) < _version_tuple(versions.c)
        bind.execute(sa.delete(live).where(match, versions.c._ddbcdc_deleted, older))
    op.drop_table(tombstone_name)


def _routed(versions_name: str) -> bool:
    columns = sa.inspect(op.get_bind()).get_columns(versions_name)
    return any(c["name"] == "_ddbcdc_route" for c in columns)


def _revert(versions_name: str) -> None:
    target = versions_name.removeprefix(_NEW)
    versions = _reflect(versions_name)
    key = list(versions.primary_key.columns)
    names = [c.name for c in key]
    tomb_name = _OLD + target
    op.create_table(
        tomb_name,
        *[sa.Column(c.name, c.type, primary_key=True) for c in key],
        sa.Column("_ddbcdc_version_us", sa.BigInteger, nullable=False),
        sa.Column("_ddbcdc_sequence", sa.Numeric),
        sa.Column("_ddbcdc_event_id", sa.Text(collation="C"), nullable=False),
        sa.Column(
            "_ddbcdc_deleted_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
    )
    op.create_index(f"{tomb_name}_v_idx", tomb_name, ["_ddbcdc_version_us"])
    tomb = _reflect(tomb_name)
    rows = sa.select(
        *[versions.c[n] for n in (*names, *_VERSION)], versions.c._ddbcdc_changed_at
    ).where(versions.c._ddbcdc_deleted)
    columns = [*names, *_VERSION, "_ddbcdc_deleted_at"]
    op.get_bind().execute(sa.insert(tomb).from_select(columns, rows))
    op.drop_table(versions_name)


def _create_prune_state() -> None:
    op.create_table(
        "ddbcdc_prune_state",
        sa.Column("target_table", sa.Text, primary_key=True),
        sa.Column("floor_us", sa.BigInteger, nullable=False),
        sa.Column("pruned_total", sa.BigInteger, nullable=False),
        sa.Column(
            "pruned_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
    )


def upgrade() -> None:
    op.add_column("ddbcdc_dead_letters", sa.Column("version_us", sa.BigInteger))
    op.add_column("ddbcdc_dead_letters", sa.Column("discarded_at", sa.DateTime(timezone=True)))
    op.add_column("ddbcdc_shard_progress", sa.Column("max_version_us", sa.BigInteger))
    op.add_column("ddbcdc_shard_progress", sa.Column("ended_at", sa.DateTime(timezone=True)))
    if not sa.inspect(op.get_bind()).has_table("ddbcdc_prune_state"):  # kept going down
        _create_prune_state()
    op.create_table(
        "ddbcdc_prune_holds",
        sa.Column("holder", sa.Text, primary_key=True),
        sa.Column("target_table", sa.Text),
        sa.Column("min_version_us", sa.BigInteger, nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
    )
    for name in _tables_with_prefix(_OLD):
        _convert(name)


def downgrade() -> None:
    for name in _tables_with_prefix(_NEW):
        if not _routed(name):
            _revert(name)
    op.drop_table("ddbcdc_prune_holds")
    floors = sa.text("SELECT EXISTS (SELECT FROM ddbcdc_prune_state)")
    if not op.get_bind().execute(floors).scalar():  # else kept: see the module doc
        op.drop_table("ddbcdc_prune_state")
    op.drop_column("ddbcdc_shard_progress", "ended_at")
    op.drop_column("ddbcdc_shard_progress", "max_version_us")
    op.drop_column("ddbcdc_dead_letters", "discarded_at")
    op.drop_column("ddbcdc_dead_letters", "version_us")
