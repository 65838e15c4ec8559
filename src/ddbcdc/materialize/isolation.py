"""Finding the changes PostgreSQL refuses, in a few statements whatever the batch.

When PostgreSQL refuses a value of a batch, the batch runs again in a new transaction and
each mapped table's part of it goes through :class:`Isolation`:

1. **Candidates, once.** Every distinct change of the batch is COPYed into a candidate table
   (``ddbcdc_iso__<target>``, temporary, emptied at each commit) and numbered there: its
   key's index in PostgreSQL's order of the keys (the order in which the fast path claims
   them) and its rank in its key (0: the newest). The table is filled at the top of the
   transaction, never in a savepoint that rolls back, so a refused attempt leaves nothing
   behind for later statements to scan. A row that cannot even be COPYed (a value the driver
   cannot encode) is found by halves of the COPY and fails alone.
2. **Ranges of keys, inside PostgreSQL** (:mod:`ddbcdc.materialize.attempts`): a temporary
   function runs the fast path's own statements, prepared over a range of key indexes at
   one rank, each attempt in a subtransaction, many attempts a call: no round trip per
   attempt. The newest changes go in ranges in key order; a range that
   applies is kept; a refused one is rolled back, and the key whose live row it was writing
   when refused (noted in a temporary sequence, which a rollback leaves as it is) is
   suspected: the keys before it are applied, then it is tried alone. A range refused
   elsewhere (the claim, the delete, a check at the end of the statement) is searched by
   halves. The key at fault is settled in place before the next range: its older changes
   are tried newest first until one applies. So a batch locks keys in key order, as the
   fast path does. Range lengths follow how far apart refused keys have been, so the
   statements run are about the keys over the range length plus a few per refused key.
3. **The change log** is written once, after the attempts: every candidate but the failed
   ones (the changes applied and those they supersede). When the log itself refuses one,
   the attempts run again, rolled back, with the log written in each of them.
4. **The prune floor**: a change the claim does not take because of the floor (see
   :mod:`ddbcdc.materialize.writer`) is settled the same way, in the same call. The fast
   path uses :meth:`Isolation.settle` for the keys it refused so.

Only SQLSTATE classes that mean "a value was refused" (:data:`ddbcdc.db.POISON_CLASSES`)
are caught inside the function; any other error ends the call unchanged and the batch is
retried as before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from ddbcdc.cleanse import CleanChange
from ddbcdc.db import classify, describe, describe_state
from ddbcdc.materialize import attempts
from ddbcdc.materialize.attempts import HI, LO, RANK, Prepared
from ddbcdc.materialize.staging import (
    binary_types,
    copy_rows,
    copy_statement,
    ensure_temp,
    temp_table,
)
from ddbcdc.materialize.writer import TableWriter
from ddbcdc.schema.tables import REMOVED_BY

__all__ = ["REFUSED_BELOW_FLOOR", "Isolation", "Settled"]

#: Why a change at or below the prune floor on a key with no version is not applied.
REFUSED_BELOW_FLOOR = (
    "change is older than the tombstone prune floor of its table and its key has no version: "
    "a delete pruned since may be newer, so it is not applied"
)

_K, _R, _SEQ, _DOC = "_ddbcdc_k", "_ddbcdc_r", "_ddbcdc_seq", "_ddbcdc_doc"
#: Key types whose values Python sorts as PostgreSQL does (text depends on the collation).
_ORDERED_ALIKE = frozenset({"bigint", "integer", "smallint", "numeric", "bytea"})


@dataclass
class Settled:
    """What isolating one table's changes did: live rows written, keys deleted, and the
    changes not applied with the reason (naming no value)."""

    upserted: int = 0
    deleted: int = 0
    failed: list[tuple[CleanChange, str]] = field(default_factory=list)


class Isolation:
    """Applies one mapping's changes so that those PostgreSQL refuses are found and returned.

    Args:
        writer: the table's writer (its statements, change log and stage).
    """

    def __init__(self, writer: TableWriter) -> None:
        self.writer = writer
        mapping = writer.mapping
        loaded = [sa.Column(c.name, c.type) for c in writer.stage.table.columns]
        if writer.log is not None:  # a change's log row: its document and a REMOVE's cause
            loaded += [sa.Column(_DOC, sa.Text), sa.Column(REMOVED_BY, sa.Text)]
        loaded.append(sa.Column(_SEQ, sa.Integer))
        self.table = temp_table(
            f"ddbcdc_iso__{mapping.target_table}",
            [*loaded, sa.Column(_K, sa.Integer), sa.Column(_R, sa.Integer)],
        )
        sa.Index(f"{self.table.name}_kr", self.table.c[_K], self.table.c[_R])
        self._types = binary_types(self.table)
        self._copy_sql = copy_statement(self.table, binary=self._types is not None)
        # Python orders these keys as PostgreSQL does: the candidates are numbered here.
        self._ordered_here = all(c.type in _ORDERED_ALIKE for c in mapping.key_columns)
        self._number = self._numbering()
        self._prepared = self._statements()

    def _numbering(self) -> sa.Update:
        """Key index (dense, in key order) and rank (newest first) of every candidate."""
        c = self.table.c
        key = [c[k] for k in self.writer.mapping.key]
        newest_first = [
            c._ddbcdc_version_us.desc(),
            sa.func.coalesce(c._ddbcdc_sequence, -1).desc(),
            c._ddbcdc_event_id.collate("C").desc(),
        ]
        numbers = sa.select(
            c[_SEQ].label("seq"),
            (sa.func.dense_rank().over(order_by=key) - 1).label("k"),
            (sa.func.row_number().over(partition_by=key, order_by=newest_first) - 1).label("r"),
        ).subquery("numbers")
        return (
            sa.update(self.table)
            .where(c[_SEQ] == numbers.c.seq)
            .values({_K: numbers.c.k, _R: numbers.c.r})
            .returning(c[_SEQ], c[_K], c[_R])
        )

    def _statements(self) -> dict[str, Prepared]:
        """The fast path's statements over candidates (lo..hi, rank): without the change log
        (it is written once at the end) and, for when the log refuses a change, with it."""
        writer, c = self.writer, self.table.c
        source = sa.select(self.table).where(c[_K].between(LO, HI), c[_R] == RANK)
        s = source.subquery("s")
        # The key index of each live row written, right before it is: where a refused
        # range failed, most likely (a hint; the next attempts check it).
        mark = sa.func.setval(sa.literal(attempts.MARKER), s.c[_K]).is_not(None)
        per_key = (
            sa.select(c[_K], sa.func.count().label("n"))
            .where(c[_K].between(LO, HI))
            .group_by(c[_K])
            .subquery()
        )
        ranks = sa.select(sa.func.array_agg(pg.aggregate_order_by(per_key.c.n, per_key.c[_K])))
        prepared = {
            "ranks": Prepared.of("isoranks", ranks, 2),
            "apply": Prepared.of("isoapply", writer.arbiter(s, refused_by=_K, mark=mark), 3),
            "delete": Prepared.of("isodelete", writer.delete(s), 3),
        }
        if writer.log is not None:
            refused = sa.select(s.c[_K]).where(writer.refused_where(s))
            rank = sa.or_(c[_R] == RANK, RANK == 0)
            where = [c[_K].between(LO, HI), rank, c[_K].not_in(refused)]
            logged = self._log(where).on_conflict_do_nothing(index_elements=["_ddbcdc_event_id"])
            arbiter = writer.arbiter(s, refused_by=_K, ctes=[logged.cte("logged")], mark=mark)
            prepared["apply_logged"] = Prepared.of("isoapplylog", arbiter, 3)
            one = self._log([c[_K] == LO, c[_R] == HI])
            prepared["log"] = Prepared.of(
                "isolog", one.on_conflict_do_nothing(index_elements=["_ddbcdc_event_id"]), 2
            )
        return prepared

    def _log(self, where: Sequence[sa.ColumnElement[bool]]) -> pg.Insert:
        """``INSERT`` into the change log of the candidates ``where`` says."""
        log = self.writer.log
        assert log is not None
        c = self.table.c
        names = ["_ddbcdc_event_id", "_ddbcdc_op", *self.writer.mapping.key]
        names += ["_ddbcdc_version_us", "_ddbcdc_sequence", REMOVED_BY]
        rows = sa.select(*[c[n] for n in names], sa.cast(c[_DOC], pg.JSONB())).where(*where)
        return pg.insert(log.table).from_select([*names, "_ddbcdc_row"], rows)

    def _log_rest(self, conn: sa.Connection, failed: list[tuple[int, int]]) -> None:
        """Log every candidate but the ``failed`` (key index, rank): the changes applied and
        those superseded by them. Straight in, or past those the log holds already."""
        c = self.table.c
        pairs = (
            sa.func.unnest(
                sa.cast(
                    sa.literal([k for k, _ in failed], pg.ARRAY(sa.Integer)), pg.ARRAY(sa.Integer)
                ),
                sa.cast(
                    sa.literal([r for _, r in failed], pg.ARRAY(sa.Integer)), pg.ARRAY(sa.Integer)
                ),
            )
            .table_valued("k", "r")
            .render_derived()
        )
        unfailed = ~sa.exists().where(pairs.c.k == c[_K], pairs.c.r == c[_R])
        insert = self._log([unfailed])
        try:
            with conn.begin_nested():
                conn.execute(insert)
            return
        except sa.exc.IntegrityError as exc:
            if not isinstance(exc.orig, psycopg.errors.UniqueViolation):
                raise
        conn.execute(insert.on_conflict_do_nothing(index_elements=["_ddbcdc_event_id"]))

    # -- per batch ---------------------------------------------------------------------------

    def apply(
        self,
        conn: sa.Connection,
        changes: Sequence[CleanChange],
        *,
        documents: Mapping[str, str | None] | None = None,
    ) -> Settled:
        """Apply ``changes`` (one mapping's, any order, duplicates allowed); see the module doc.
        ``documents``: the change log's row documents by event id, when made beforehand."""
        return self._run(conn, _by_key(changes), settle_only=False, documents=documents)

    def settle(
        self, conn: sa.Connection, changes: Sequence[CleanChange], refused: Sequence[str]
    ) -> Settled:
        """The keys whose newest change the fast path refused below the prune floor
        (``refused``: their event ids): their older changes, newest first."""
        ids = set(refused)
        keys = [g for g in _by_key(changes) if g[0].event_id in ids]
        settled = Settled(failed=[(g[0], REFUSED_BELOW_FLOOR) for g in keys])
        # the newest (refused already) stays out: rank 0 is the next older change
        rest = [g[1:] for g in keys if len(g) > 1]
        if rest:
            more = self._run(conn, rest, settle_only=True)
            settled.upserted, settled.deleted = more.upserted, more.deleted
            settled.failed += more.failed
        return settled

    def _run(
        self,
        conn: sa.Connection,
        groups: list[list[CleanChange]],
        *,
        settle_only: bool,
        documents: Mapping[str, str | None] | None = None,
    ) -> Settled:
        settled = Settled()
        at = self._load(conn, groups, settled, documents)
        if not at:
            return settled
        keys = 1 + max(k for k, _ in at)
        for row in self._attempts(conn, keys, settle_only):
            settled.upserted += row.upserted or 0
            settled.deleted += row.deleted or 0
            if row.key_index is None:
                continue
            change = at[(row.key_index, row.rank)]
            if row.state == "floor":
                settled.failed.append((change, REFUSED_BELOW_FLOOR))
            else:
                fields = (row.table_name, row.column_name, row.constraint_name, row.datatype)
                settled.failed.append((change, describe_state(row.state, *fields)))
        return settled

    def _load(
        self,
        conn: sa.Connection,
        groups: list[list[CleanChange]],
        settled: Settled,
        documents: Mapping[str, str | None] | None,
    ) -> dict[tuple[int, int], CleanChange]:
        """COPY every candidate, numbered: the candidate at each (key index, rank). Those
        that cannot be COPYed fail alone."""
        ensure_temp(conn, self.table)
        conn.execute(sa.delete(self.table))
        here = self._ordered_here
        if here:
            groups = sorted(groups, key=lambda g: g[0].key)
        changes = [c for g in groups for c in g]
        numbers = [(k, r) for k, g in enumerate(groups) for r in range(len(g))]
        log = self.writer.log
        docs: list[Any] = []
        if log is not None:
            known = documents or {}
            missing = [c for c in changes if c.event_id not in known]
            made = {c.event_id: r[-1] for c, r in zip(missing, log.rows(missing), strict=True)}
            docs = [(known.get(c.event_id, made.get(c.event_id)), c.cause) for c in changes]
        rows = [
            (*row, *(docs[i] if docs else ()), i, *(numbers[i] if here else (None, None)))
            for i, row in enumerate(self.writer.stage.rows(changes))
        ]

        def write(part: list[Any]) -> None:
            copy_rows(conn, self._copy_sql, part, self._types)

        refused = _copy_halves(conn, write, rows, 0)
        for index, exc in refused.items():
            settled.failed.append((changes[index], describe(exc)))
        if here and not refused:
            return dict(zip(numbers, changes, strict=True))
        return {(k, r): changes[seq] for seq, k, r in conn.execute(self._number)}

    def _calls(
        self, conn: sa.Connection, keys: int, settle_only: bool, *, logged: bool
    ) -> list[sa.Row[Any]]:
        """Every key tried, with the statements that log (``logged``) or do not."""
        kinds = ["apply_logged", "delete", "log"] if logged else ["apply", "delete", None]
        statements = [self._prepared[k] if k is not None else None for k in kinds]
        return attempts.run(
            conn, statements, self._prepared["ranks"], keys, settle_only=settle_only
        )

    def _attempts(self, conn: sa.Connection, keys: int, settle_only: bool) -> list[sa.Row[Any]]:
        """Every candidate tried (the function's rows), and the change log written."""
        if self.writer.log is None:
            return self._calls(conn, keys, settle_only, logged=False)
        try:
            with conn.begin_nested():
                rows = self._calls(conn, keys, settle_only, logged=False)
                failed = [(r.key_index, r.rank) for r in rows if r.key_index is not None]
                self._log_rest(conn, failed)
            return rows
        except Exception as exc:
            if classify(exc) != "poison":
                raise
        # The log refuses a change: log in each attempt instead, so that it fails there.
        return self._calls(conn, keys, settle_only, logged=True)


def _by_key(changes: Sequence[CleanChange]) -> list[list[CleanChange]]:
    """Each key's distinct changes (by event id), newest first."""
    groups: dict[tuple[Any, ...], list[CleanChange]] = {}
    for change in changes:
        found = groups.get(change.key)
        if found is None:
            groups[change.key] = [change]
        else:
            found.append(change)
    for key, found in groups.items():
        if len(found) > 1:
            distinct = {c.event_id: c for c in found}.values()
            groups[key] = sorted(distinct, key=lambda c: c.version, reverse=True)
    return list(groups.values())


def _copy_halves(
    conn: sa.Connection, write: Callable[[list[Any]], None], rows: list[Any], start: int
) -> dict[int, BaseException]:
    """COPY ``rows`` in a savepoint; those refused are found by halves, by index."""
    if not rows:
        return {}
    try:
        with conn.begin_nested():
            write(rows)
        return {}
    except Exception as exc:
        if classify(exc) != "poison":
            raise
        if len(rows) == 1:
            return {start: exc}
    middle = len(rows) // 2
    found = _copy_halves(conn, write, rows[:middle], start)
    found.update(_copy_halves(conn, write, rows[middle:], start + middle))
    return found
