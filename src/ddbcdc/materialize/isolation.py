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
2. **Ranges of keys, inside PostgreSQL.** ``pg_temp.ddbcdc_isolate`` (``isolate.sql``, a
   temporary function) runs the fast path's own statements, prepared over a range of key
   indexes at one rank, each attempt in a subtransaction, all in one call: no round trip
   per attempt. The newest changes go in ranges in key order; a range that applies is kept;
   a refused one is rolled back and its first half tried, down to the key at fault (a binary
   search from where the last range ended). That key is settled in place before the next
   range: its older changes are tried newest first until one applies, the ones older still
   are then logged (superseded by it). So a batch locks keys in key order, as the fast path
   does. Range lengths follow how far apart refused keys have been, so the statements run
   are about the keys over the range length plus a logarithm of it per refused key.
3. **The prune floor**: a change the claim does not take because of the floor (see
   :mod:`ddbcdc.materialize.writer`) is settled the same way, in the same call. The fast
   path uses :meth:`Isolation.settle` for the keys it refused so.

Only SQLSTATE classes that mean "a value was refused" (:data:`ddbcdc.db.POISON_CLASSES`)
are caught inside the function; any other error ends the call unchanged and the batch is
retried as before.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.dialects import postgresql as pg

from ddbcdc.cleanse import CleanChange
from ddbcdc.db import POISON_CLASSES, classify, describe, describe_state
from ddbcdc.materialize.staging import (
    binary_types,
    copy_rows,
    copy_statement,
    ensure_temp,
    temp_table,
)
from ddbcdc.materialize.writer import TableWriter

__all__ = ["REFUSED_BELOW_FLOOR", "Isolation", "Settled"]

#: Why a change at or below the prune floor on a key with no version is not applied.
REFUSED_BELOW_FLOOR = (
    "change is older than the tombstone prune floor of its table and its key has no version: "
    "a delete pruned since may be newer, so it is not applied"
)

_K, _R, _SEQ, _DOC = "_ddbcdc_k", "_ddbcdc_r", "_ddbcdc_seq", "_ddbcdc_doc"
#: How long ranges are: about sqrt(SPACING * keys per refused key). The cost of an attempt
#: over the cost of a key in it; a longer range wastes more when refused.
SPACING = 4.0
_SIGNATURE = (
    "pg_temp.ddbcdc_isolate(text, text, text, integer[], boolean, text[], double precision)"
)
#: The prepared statements' placeholders: first and last key index, rank.
_LO, _HI, _RANK = (sa.literal_column(f"${n}", sa.Integer) for n in (1, 2, 3))
_DOLLAR = pg.dialect(paramstyle="numeric_dollar")  # type: ignore[no-untyped-call]


@dataclass
class Settled:
    """What isolating one table's changes did: live rows written, keys deleted, and the
    changes not applied with the reason (naming no value)."""

    upserted: int = 0
    deleted: int = 0
    failed: list[tuple[CleanChange, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A statement prepared (``PREPARE``) on each connection that isolates."""

    name: str
    text: sql.Composed

    @classmethod
    def of(cls, kind: str, statement: sa.ClauseElement, arguments: int) -> _Prepared:
        body = str(statement.compile(dialect=_DOLLAR, compile_kwargs={"literal_binds": True}))
        name = f"ddbcdc_{kind}_{hashlib.blake2b(body.encode(), digest_size=6).hexdigest()}"
        types = sql.SQL(", ".join(["integer"] * arguments))
        text = sql.SQL("PREPARE {} ({}) AS ").format(sql.Identifier(name), types) + sql.SQL(body)
        return cls(name, text)


def _function_text() -> str:
    return resources.files("ddbcdc.materialize").joinpath("isolate.sql").read_text()


class Isolation:
    """Applies one mapping's changes so that those PostgreSQL refuses are found and returned.

    Args:
        writer: the table's writer (its statements, change log and stage).
    """

    def __init__(self, writer: TableWriter) -> None:
        self.writer = writer
        mapping = writer.mapping
        loaded = [sa.Column(c.name, c.type) for c in writer.stage.table.columns]
        if writer.log is not None:
            loaded.append(sa.Column(_DOC, sa.Text))
        loaded.append(sa.Column(_SEQ, sa.Integer))
        self.table = temp_table(
            f"ddbcdc_iso__{mapping.target_table}",
            [*loaded, sa.Column(_K, sa.Integer), sa.Column(_R, sa.Integer)],
        )
        sa.Index(f"{self.table.name}_kr", self.table.c[_K], self.table.c[_R])
        shape = sa.Table(
            self.table.name, sa.MetaData(), *[sa.Column(c.name, c.type) for c in loaded]
        )
        self._types = binary_types(shape)
        self._copy_sql = copy_statement(shape, binary=self._types is not None)
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

    def _statements(self) -> dict[str, _Prepared]:
        """The fast path's statements over candidates (lo..hi, rank), and logging one."""
        writer, c = self.writer, self.table.c
        source = sa.select(self.table).where(c[_K].between(_LO, _HI), c[_R] == _RANK)
        s = source.subquery("s")
        ctes: list[sa.CTE] = []
        prepared: dict[str, _Prepared] = {}
        if writer.log is not None:
            refused = sa.select(s.c[_K]).where(writer.refused_where(s))
            ranks = sa.or_(c[_R] == _RANK, _RANK == 0)
            where = [c[_K].between(_LO, _HI), ranks, c[_K].not_in(refused)]
            ctes.append(self._log(where).cte("logged"))
            one = [c[_K] == _LO, c[_R] == _HI]
            prepared["log"] = _Prepared.of("isolog", self._log(one), 2)
        arbiter = writer.arbiter(s, refused_by=_K, ctes=ctes)
        prepared["apply"] = _Prepared.of("isoapply", arbiter, 3)
        prepared["delete"] = _Prepared.of("isodelete", writer.delete(s), 3)
        return prepared

    def _log(self, where: Sequence[sa.ColumnElement[bool]]) -> Any:
        """``INSERT`` into the change log of the candidates ``where`` says."""
        log = self.writer.log
        assert log is not None
        c = self.table.c
        names = ["_ddbcdc_event_id", "_ddbcdc_op", *self.writer.mapping.key]
        names += ["_ddbcdc_version_us", "_ddbcdc_sequence"]
        rows = sa.select(*[c[n] for n in names], sa.cast(c[_DOC], pg.JSONB())).where(*where)
        return (
            pg.insert(log.table)
            .from_select([*names, "_ddbcdc_row"], rows)
            .on_conflict_do_nothing(index_elements=["_ddbcdc_event_id"])
        )

    # -- per batch ---------------------------------------------------------------------------

    def apply(self, conn: sa.Connection, changes: Sequence[CleanChange]) -> Settled:
        """Apply ``changes`` (one mapping's, any order, duplicates allowed); see the module doc."""
        return self._run(conn, _by_key(changes), settle_only=False)

    def settle(
        self, conn: sa.Connection, changes: Sequence[CleanChange], refused: Sequence[str]
    ) -> Settled:
        """The keys whose newest change the fast path refused below the prune floor
        (``refused``: their event ids): their older changes, newest first."""
        ids = set(refused)
        keys = [g for g in _by_key(changes) if g[0].event_id in ids]
        settled = Settled(failed=[(g[0], REFUSED_BELOW_FLOOR) for g in keys])
        rest = [g for g in keys if len(g) > 1]
        if rest:
            more = self._run(conn, rest, settle_only=True)
            settled.upserted, settled.deleted = more.upserted, more.deleted
            settled.failed += more.failed
        return settled

    def _run(
        self, conn: sa.Connection, groups: list[list[CleanChange]], *, settle_only: bool
    ) -> Settled:
        settled = Settled()
        ensure_temp(conn, self.table)
        conn.execute(sa.delete(self.table))
        # settling: the newest (refused already) stays out, rank 0 is the next older change
        changes = [c for g in groups for c in (g[1:] if settle_only else g)]
        for index, exc in self._load(conn, changes).items():
            settled.failed.append((changes[index], describe(exc)))
        at: dict[tuple[int, int], CleanChange] = {}
        ranks: list[int] = []
        for seq, k, r in conn.execute(self._number):
            at[(k, r)] = changes[seq]
            if k >= len(ranks):
                ranks.extend([0] * (k + 1 - len(ranks)))
            ranks[k] = max(ranks[k], r + 1)
        if not ranks:
            return settled
        self._ensure_server_side(conn)
        for row in conn.execute(self._call(ranks, settle_only)):
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

    def _load(self, conn: sa.Connection, changes: list[CleanChange]) -> dict[int, BaseException]:
        """COPY the candidates; those that cannot be COPYed, by index."""
        rows = self.writer.stage.rows(changes)
        if self.writer.log is not None:
            docs = [r[-1] for r in self.writer.log.rows(changes)]
            rows = [(*row, doc, i) for i, (row, doc) in enumerate(zip(rows, docs, strict=True))]
        else:
            rows = [(*row, i) for i, row in enumerate(rows)]

        def write(part: list[Any]) -> None:
            copy_rows(conn, self._copy_sql, part, self._types)

        return _copy_halves(conn, write, rows, 0)

    def _ensure_server_side(self, conn: sa.Connection) -> None:
        """The functions and the prepared statements on this connection (a rolled-back
        transaction takes functions it created along; prepared statements stay)."""
        names = [p.name for p in self._prepared.values()]
        name = sa.column("name", sa.Text)
        prepared: sa.Select[Any] = (
            sa.select(sa.func.array_agg(name))
            .select_from(sa.table("pg_prepared_statements"))
            .where(name.in_(names))
        )
        function = sa.func.to_regprocedure(_SIGNATURE).is_not(None)
        have, made = conn.execute(sa.select(prepared.scalar_subquery(), function)).one()
        driver = _driver(conn)
        if not made:
            driver.execute(_function_text())
        for statement in self._prepared.values():
            if statement.name not in (have or ()):
                driver.execute(statement.text)

    def _call(self, ranks: list[int], settle_only: bool) -> sa.Select[Any]:
        log = self._prepared.get("log")
        call = sa.func.pg_temp.ddbcdc_isolate(
            self._prepared["apply"].name,
            self._prepared["delete"].name,
            sa.cast(log.name if log is not None else None, sa.Text),
            sa.cast(sa.literal(ranks, pg.ARRAY(sa.Integer)), pg.ARRAY(sa.Integer)),
            settle_only,
            sa.cast(sa.literal(sorted(POISON_CLASSES), pg.ARRAY(sa.Text)), pg.ARRAY(sa.Text)),
            SPACING,
        ).table_valued(
            "key_index",
            "rank",
            "state",
            "table_name",
            "column_name",
            "constraint_name",
            "datatype",
            "deleted",
            "upserted",
        )
        return sa.select(call)


def _driver(conn: sa.Connection) -> psycopg.Connection[Any]:
    driver = conn.connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    return driver


def _by_key(changes: Sequence[CleanChange]) -> list[list[CleanChange]]:
    """Each key's distinct changes (by event id), newest first."""
    groups: dict[tuple[Any, ...], dict[str, CleanChange]] = {}
    for change in changes:
        groups.setdefault(change.key, {})[change.event_id] = change
    return [
        sorted(found.values(), key=lambda c: c.version, reverse=True) for found in groups.values()
    ]


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
