"""The statements that apply one staged batch of one mapped table.

The rule they implement (docs/correctness.md): every key has one row in
``ddbcdc_versions__<target>`` holding the version of the newest change ever applied to it,
live or REMOVE; a change is applied only by taking that row's lock and finding it older.
Per batch, after the COPY into the stage (:mod:`ddbcdc.materialize.staging`):

1. **arbitrate and upsert** (one statement): the newest change of each key is upserted into
   the versions row, in key order (so concurrent batches lock keys in one order and never
   deadlock), ``ON CONFLICT ... DO UPDATE ... WHERE`` the stored version is older. The
   conflicting row is locked whether or not it is updated, so a concurrent writer of the
   same key waits for this transaction and then compares with what it committed. The keys
   whose change won (``RETURNING``) get their live row upserted in the same statement.
2. **delete**: live rows of keys whose versions row is now a tombstone. A statement of its
   own: it runs on a snapshot taken after step 1 holds the keys' locks, so it sees a live row
   that a writer committed while step 1 waited for it. A mapping that keeps some deleted rows
   (:mod:`ddbcdc.schema.deletes`) does, per REMOVE that its key's versions row holds (the one
   that won, or a copy of it), what its mode says: ``hard`` deletes the row; ``soft`` and
   ``keep`` upsert the item's last image when the REMOVE carries it, ``soft`` with
   ``_ddbcdc_deleted_at`` set to the change's time; ``soft`` without an image marks the row
   as it is; ``keep`` without one leaves it. Still one statement (the parts in CTEs, on
   distinct keys), so the step is what it is for hard deletes; step 1's upsert of a winning
   INSERT or MODIFY clears the mark.
3. **log** (with ``change_log``): every distinct change, COPYed straight into the log, or, when
   the log holds some of them already, ``ON CONFLICT (event id) DO NOTHING``
   (:mod:`ddbcdc.materialize.changelog`).

Tombstones at or below the table's prune floor may have been pruned, so a change at or below
the floor whose key has no versions row cannot be compared: step 1 does not apply it. An
INSERT or MODIFY is returned as "refused" (the caller dead-letters it: a pruned REMOVE may be
newer); a REMOVE has nothing to do (the key has no live row) and must not leave a tombstone,
which would claim a version older than the pruned one. Above the floor, or on a key with a
versions row (rows are only ever pruned, never made older), the comparison is exact.

A version is ``(_ddbcdc_version_us, coalesce(_ddbcdc_sequence, -1), _ddbcdc_event_id)``
compared as a row value, event ids in the "C" collation: exactly :data:`ddbcdc.cleanse.Version`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from ddbcdc.cleanse import CleanChange
from ddbcdc.materialize.changelog import ChangeLog, LogRow
from ddbcdc.materialize.staging import StageRow, StageTable
from ddbcdc.schema.bookkeeping import prune_state
from ddbcdc.schema.tables import DELETED_AT, VERSION_COLUMNS, MappedTables

__all__ = [
    "LiveWriter",
    "Outcome",
    "TableWriter",
    "claim",
    "floor_of",
    "key_match",
    "refused_where",
]

_LOWEST = -(2**63)
_EPOCH = sa.func.to_timestamp(0)
_ONE_US = sa.cast(sa.literal("1 microsecond"), sa.Interval())


@dataclass
class Outcome:
    """What one :meth:`TableWriter.run` did.

    Attributes:
        upserted: live rows written (changes that won their key).
        deleted: keys whose REMOVE won.
        refused: event ids of changes not applied because they are at or below the prune
            floor on a key with no versions row (see the module doc).
    """

    upserted: int = 0
    deleted: int = 0
    refused: list[str] = field(default_factory=list)


def _version(cols: Any) -> sa.Tuple:
    """The row-value version of a column collection (``table.c`` or ``excluded``)."""
    return sa.tuple_(
        cols._ddbcdc_version_us,
        sa.func.coalesce(cols._ddbcdc_sequence, -1),
        cols._ddbcdc_event_id.collate("C"),
    )


def key_match(left: Any, right: Any, key: Sequence[str]) -> sa.ColumnElement[bool]:
    """``left`` and ``right`` (tables, CTEs) on the same key."""
    return sa.and_(*[left.c[k] == right.c[k] for k in key])


def floor_of(target: str) -> sa.ColumnElement[Any]:
    """The prune floor of a table's versions (the lowest version when it has none)."""
    floor = (
        sa.select(prune_state.c.floor_us)
        .where(prune_state.c.target_table == target)
        .scalar_subquery()
    )
    return sa.func.coalesce(floor, _LOWEST)


def has_version(versions: sa.Table, source: sa.FromClause, key: Sequence[str]) -> sa.Exists:
    """Whether the key of a ``source`` row has a versions row."""
    return sa.select(sa.literal(1)).where(key_match(versions, source, key)).exists()


def refused_where(
    versions: sa.Table, source: sa.FromClause, key: Sequence[str], floor: sa.ColumnElement[Any]
) -> sa.ColumnElement[bool]:
    """The rows of ``source`` not applied because of the prune floor (see the module doc)."""
    s = source
    return sa.and_(
        s.c._ddbcdc_op != "REMOVE",
        s.c._ddbcdc_version_us <= floor,
        ~has_version(versions, s, key),
    )


def claim(
    source: sa.FromClause,
    versions: sa.Table,
    key: Sequence[str],
    floor: sa.ColumnElement[Any],
    *,
    routed: bool = False,
) -> sa.CTE:
    """The newest change of each key upserted into its versions row where newer, in key
    order; RETURNING the keys won (and whether by a REMOVE). ``routed``: the row also takes
    the change's route, and keeps the route it replaces as ``_ddbcdc_prev_route`` (both
    returned): the live row that route holds must go."""
    s, ver = source, versions
    admissible = sa.or_(s.c._ddbcdc_version_us > floor, has_version(ver, s, key))
    names = [*key, *VERSION_COLUMNS, "_ddbcdc_deleted"]
    values = [*[s.c[n] for n in (*key, *VERSION_COLUMNS)], s.c._ddbcdc_op == "REMOVE"]
    if routed:
        names.append("_ddbcdc_route")
        values.append(s.c._ddbcdc_route)
    candidates = sa.select(*values).where(admissible).order_by(*[s.c[k] for k in key])
    insert = pg.insert(ver).from_select(names, candidates)
    updated: dict[str, Any] = {
        **{n: insert.excluded[n] for n in (*VERSION_COLUMNS, "_ddbcdc_deleted")},
        "_ddbcdc_changed_at": sa.func.now(),
    }
    returned = [*[ver.c[k] for k in key], ver.c._ddbcdc_deleted]
    if routed:
        updated["_ddbcdc_route"] = insert.excluded._ddbcdc_route
        updated["_ddbcdc_prev_route"] = ver.c._ddbcdc_route
        returned += [ver.c._ddbcdc_route, ver.c._ddbcdc_prev_route]
    return (
        insert.on_conflict_do_update(
            index_elements=key,
            set_=updated,
            where=_version(ver.c) < _version(insert.excluded),
        )
        .returning(*returned)
        .cte("won")
    )


class LiveWriter:
    """How rows enter and leave one live table (a plain mapping's, or a route's): the
    statements each writer composes, per target."""

    def __init__(self, tables: MappedTables) -> None:
        self.live = tables.live
        self.key = list(tables.mapping.key)
        self.columns = list(tables.mapping.stored_columns)
        #: The columns :meth:`upsert` takes, in order.
        self.names = [*self.columns, *VERSION_COLUMNS]
        #: A winning INSERT or MODIFY clears the mark of a row kept for a deleted item.
        self._cleared = {DELETED_AT: sa.null()} if tables.mapping.policy.marks else {}

    def staged(self, column: sa.ColumnElement[Any], name: str) -> sa.ColumnElement[Any]:
        """A stage column as the live column ``name``'s type (jsonb text is cast)."""
        live_type = self.live.c[name].type if name in self.live.c else None
        if isinstance(live_type, pg.JSONB):
            return sa.cast(column, pg.JSONB())
        return column

    def upsert(self, rows: sa.Select[Any], name: str) -> sa.CTE:
        """``rows`` (:attr:`names`, in order) upserted, as the CTE ``name`` RETURNING 1 per
        row. Only for keys whose versions rows this transaction holds locked."""
        put = pg.insert(self.live).from_select(self.names, rows)
        return (
            put.on_conflict_do_update(
                index_elements=self.key,
                set_={
                    **{n: put.excluded[n] for n in self.names if n not in self.key},
                    "_ddbcdc_updated_at": sa.func.now(),
                    **self._cleared,
                },
            )
            .returning(sa.literal(1))
            .cte(name)
        )

    def delete(self, *where: sa.ColumnElement[bool]) -> sa.Delete:
        """The live rows ``where`` says (other tables it names are joined)."""
        return sa.delete(self.live).where(*where)


class TableWriter:
    """Prepared statements of one mapped table over its stage; :meth:`run` applies a batch."""

    def __init__(self, tables: MappedTables) -> None:
        self.tables = tables
        self.mapping = tables.mapping
        self.stage = StageTable(tables)
        self.target = LiveWriter(tables)
        self._key = list(self.mapping.key)
        self._floor = floor_of(self.mapping.target_table)
        self._arbiter = self.arbiter(self.stage.table)
        self._delete = self.delete(self.stage.table)
        self.log = ChangeLog(tables) if tables.changes is not None else None

    def _upsert_live(
        self, source: sa.FromClause, won: sa.CTE, mark: sa.ColumnElement[bool] | None
    ) -> sa.CTE:
        """The live rows of the keys an INSERT or MODIFY won (their versions rows are locked
        by this transaction: no other writer of these keys can be in between). ``mark``:
        evaluated with each row joined, right before it is written."""
        s, target = source, self.target
        on = key_match(s, won, self._key)
        rows = (
            sa.select(*[target.staged(s.c[n], n) for n in target.names])
            .select_from(s.join(won, on if mark is None else sa.and_(on, mark)))
            .where(~won.c._ddbcdc_deleted)
        )
        return target.upsert(rows, "upserted")

    def refused_where(self, source: sa.FromClause) -> sa.ColumnElement[bool]:
        """The rows of ``source`` not applied because of the prune floor (see the module doc)."""
        return refused_where(self.tables.versions, source, self._key, self._floor)

    def arbiter(
        self,
        source: sa.FromClause,
        *,
        refused_by: str = "_ddbcdc_event_id",
        ctes: Sequence[sa.CTE] = (),
        mark: sa.ColumnElement[bool] | None = None,
    ) -> sa.Select[Any]:
        """Step 1 over ``source`` (the stage, or rows shaped like it): claim, upsert the
        winners' live rows; (deleted, upserted, the ``refused_by`` column of the rows refused
        below the floor). ``ctes``: more statements to run with it; ``mark``: evaluated with
        each live row right before it is written."""
        s = source
        won = claim(s, self.tables.versions, self._key, self._floor)
        upserted = self._upsert_live(s, won, mark)
        refused = sa.select(sa.func.array_agg(s.c[refused_by])).where(self.refused_where(s))
        count = sa.func.count()
        deleted = sa.select(count).select_from(won).where(won.c._ddbcdc_deleted)
        statement = sa.select(
            deleted.scalar_subquery().label("deleted"),
            sa.select(count).select_from(upserted).scalar_subquery().label("upserted"),
            refused.scalar_subquery().label("refused"),
        )
        return statement.add_cte(*ctes) if ctes else statement

    def delete(self, source: sa.FromClause) -> sa.Delete | sa.Insert:
        """Step 2 over ``source``: live rows of its REMOVEs whose key is now a tombstone,
        deleted, or, for a mapping that keeps some deleted rows, kept as its modes say."""
        if not self.mapping.policy.hard:
            return self._removal(source)
        s, ver, live = source, self.tables.versions, self.tables.live
        return self.target.delete(
            key_match(live, ver, self._key),
            ver.c._ddbcdc_deleted,
            key_match(live, s, self._key),
            s.c._ddbcdc_op == "REMOVE",
        )

    def _applied(self, source: sa.FromClause) -> list[sa.ColumnElement[bool]]:
        """Rows of ``source`` that are REMOVEs their key's versions row holds."""
        s, ver = source, self.tables.versions
        return [
            key_match(ver, s, self._key),
            ver.c._ddbcdc_deleted,
            ver.c._ddbcdc_version_us == s.c._ddbcdc_version_us,
            ver.c._ddbcdc_event_id == s.c._ddbcdc_event_id,
            s.c._ddbcdc_op == "REMOVE",
        ]

    def _removal(self, source: sa.FromClause) -> sa.Insert:
        """Step 2 of a mapping that keeps some deleted rows (see the module doc)."""
        s, live, modes = source, self.tables.live, self.mapping.policy.modes
        key, applied = self._key, self._applied(s)
        deleted_at = _EPOCH + s.c._ddbcdc_version_us * _ONE_US
        names = list(self.target.names)
        values = [self.target.staged(s.c[n], n) for n in names]
        if "soft" in modes:
            names.append(DELETED_AT)
            values.append(sa.case((s.c._ddbcdc_mode == "soft", deleted_at)))
        images = sa.select(*values).where(*applied, s.c._ddbcdc_image)
        put = pg.insert(live).from_select(names, images)
        statement = put.on_conflict_do_update(
            index_elements=key,
            set_={
                **{n: put.excluded[n] for n in names if n not in key},
                "_ddbcdc_updated_at": sa.func.now(),
            },
        )
        parts = []
        if "hard" in modes:
            hard = sa.delete(live).where(
                key_match(live, s, key), *applied, s.c._ddbcdc_mode == "hard"
            )
            parts.append(hard.returning(sa.literal(1)).cte("hard"))
        if "soft" in modes:
            mark = (
                sa.update(live)
                .where(key_match(live, s, key), *applied, s.c._ddbcdc_mode == "soft")
                .where(~s.c._ddbcdc_image)
                .values(
                    {
                        **{n: s.c[n] for n in VERSION_COLUMNS},
                        "_ddbcdc_updated_at": sa.func.now(),
                        DELETED_AT: deleted_at,
                    }
                )
            )
            parts.append(mark.returning(sa.literal(1)).cte("marked"))
        return statement.add_cte(*parts) if parts else statement

    @property
    def logged(self) -> bool:
        """Whether this table keeps a change log."""
        return self.log is not None

    def run(
        self,
        conn: sa.Connection,
        logged: Sequence[CleanChange],
        newest: Sequence[CleanChange],
        *,
        rows: Sequence[StageRow] | None = None,
        log_rows: Sequence[LogRow] | None = None,
    ) -> Outcome:
        """Stage and apply: ``newest`` compete for their keys, ``logged`` go to the change log.

        ``newest`` must hold at most one change per key. No change of a key whose newest
        change was refused is logged (the caller settles those keys). ``rows`` and
        ``log_rows``: the stage rows of ``newest`` and the log rows of ``logged``, when made
        beforehand. The stage is left filled (:meth:`StageTable.clear` empties it).
        """
        outcome = Outcome()
        if newest:
            self.stage.ensure(conn)
            self.stage.copy(conn, rows if rows is not None else self.stage.rows(newest))
            deleted, upserted, refused = conn.execute(self._arbiter).one()
            outcome = Outcome(upserted, deleted, list(refused or ()))
            if deleted:
                conn.execute(self._delete)
        if self.log is not None and logged:
            if log_rows is None:
                log_rows = self.log.rows(logged)
            if outcome.refused:
                refused_ids = set(outcome.refused)
                keys = {c.key for c in newest if c.event_id in refused_ids}
                log_rows = [r for c, r in zip(logged, log_rows, strict=True) if c.key not in keys]
            self.log.write(conn, log_rows)
        return outcome
