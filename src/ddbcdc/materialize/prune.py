"""Tombstone pruning, in stream time, and the prune floor that keeps it safe.

A tombstone (a deleted row of ``ddbcdc_versions__<target>``) is needed as long as some source
may still bring an older change of its key. Pruning never looks at the wall clock:

- **stream time** (:mod:`ddbcdc.materialize.streamtime`): each shard's progress row records
  the newest change time it has applied (``max_version_us``), or the present once it is caught
  up and idle; the stream is at the *oldest* of them over the shards that have not ended, and
  every shard the worker listed counts, so a shard that has not started yet stops pruning
  until it has. A change still to come from a shard is assumed no older than the stream time
  minus the **horizon** (``DDBCDC_TOMBSTONE_HORIZON``, 8 days by default, far beyond how late
  DynamoDB delivers a change). Without a stream time nothing is pruned.
- **holds** (``ddbcdc_prune_holds``): a snapshot or an import that may still write rows at a
  version keeps every tombstone at or above it.
- **pending dead letters**: one whose version is known keeps the tombstones at or above it,
  so replaying it after a fix compares against what was there (of a routed mapping, the
  letters of every route's table: a value a route's column refused is named by that table).

So the cutoff is ``min(stream time - horizon, holds, pending dead letters)``; tombstones below
it are deleted, and the table's **floor** (``ddbcdc_prune_state.floor_us``) is raised to the
newest version pruned. Whatever else brings an old change later (``ddbcdc apply`` of an old
file, a lease-less processor, a replay) meets the floor rule in
:mod:`ddbcdc.materialize.writer`: at or below the floor, on a key with no versions row, a
write is refused (dead-lettered), because a pruned delete may be newer. Pruning can make a
change be refused; it can never make one wrong.

Pruning and writing exclude each other per table through an advisory lock: every batch takes
it shared (:func:`share_locks`) before reading the floor, a prune takes it exclusively for a
short transaction, so no batch reads a floor that a prune is about to raise.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from ddbcdc.db import sqlstate
from ddbcdc.materialize.streamtime import stream_times
from ddbcdc.schema.bookkeeping import dead_letters, prune_holds, prune_state
from ddbcdc.schema.tables import MappedTables

__all__ = [
    "Cutoff",
    "Pruner",
    "hold",
    "lock_key",
    "release",
    "share_locks",
]

log = logging.getLogger(__name__)

_PRUNER_KEY = "ddbcdc.pruner"
#: How long a prune waits for the batches in flight (new batches queue behind it meanwhile).
_LOCK_TIMEOUT = sa.text("SET LOCAL lock_timeout = '1s'")
_CHUNK = 5000


def lock_key(name: str) -> int:
    """The advisory lock id of a name (64-bit, stable across processes and versions)."""
    digest = hashlib.blake2b(f"ddbcdc.prune:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def share_locks(conn: sa.Connection, targets: Iterable[str]) -> None:
    """Take the prune locks of ``targets`` shared, in one order (at a transaction's start)."""
    keys = sorted({lock_key(t) for t in targets})
    if keys:
        locks = [sa.func.pg_advisory_xact_lock_shared(k) for k in keys]
        conn.execute(sa.select(*locks))


def hold(conn: sa.Connection, holder: str, min_version_us: int, target: str | None) -> None:
    """Keep tombstones at or above ``min_version_us`` (of ``target``, None: every table).

    Taken under the table's prune lock, so a prune running now finishes first and one
    starting later sees the hold. Holding again lowers the version, never raises it.
    """
    share_locks(conn, [target] if target else [])
    stmt = pg.insert(prune_holds).values(
        holder=holder, target_table=target, min_version_us=min_version_us
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[prune_holds.c.holder],
            set_={
                "min_version_us": sa.func.least(
                    prune_holds.c.min_version_us, stmt.excluded.min_version_us
                )
            },
        )
    )


def release(conn: sa.Connection, holder: str) -> None:
    """Drop a hold."""
    conn.execute(sa.delete(prune_holds).where(prune_holds.c.holder == holder))


@dataclass(frozen=True, slots=True)
class Cutoff:
    """Where pruning may go for one table, and what decided it.

    Attributes:
        version_us: tombstones below this may be pruned (None: none may).
        reason: what bounds it (``stream``, ``hold``, ``dead letter``) or why there is none.
    """

    version_us: int | None
    reason: str


def _stream_time(conn: sa.Connection) -> tuple[int | None, str]:
    """The oldest stream time over the applications that have open shards, and why."""
    times = [t for t in stream_times(conn, store=True) if t.open_shards]
    if not times:
        return None, "no shard progress yet"
    for time_ in times:
        reason = time_.why_unknown()
        if reason is not None:
            return None, reason
    return min(int(t.stream_time_us) for t in times if t.stream_time_us is not None), "stream"


def cutoff(
    conn: sa.Connection, target: str, horizon: timedelta, tables: Sequence[str] = ()
) -> Cutoff:
    """The prune cutoff of ``target`` now (see the module doc).

    ``tables``: the tables of ``target``'s rows (a routed mapping's route tables), whose
    pending dead letters hold it too (a refused change is named by its route's table)."""
    stream, reason = _stream_time(conn)
    if stream is None:
        return Cutoff(None, reason)
    candidates = [(stream - horizon // timedelta(microseconds=1), "stream")]
    held = conn.execute(
        sa.select(sa.func.min(prune_holds.c.min_version_us)).where(
            sa.or_(prune_holds.c.target_table == target, prune_holds.c.target_table.is_(None))
        )
    ).scalar()
    if held is not None:
        candidates.append((int(held), "hold"))
    pending = conn.execute(
        sa.select(sa.func.min(dead_letters.c.version_us)).where(
            dead_letters.c.replayed_at.is_(None),
            dead_letters.c.discarded_at.is_(None),
            dead_letters.c.target_table.in_(sorted({target, *tables})),
        )
    ).scalar()
    if pending is not None:
        candidates.append((int(pending), "dead letter"))
    version, why = min(candidates)
    return Cutoff(version, why)


class Pruner:
    """Prunes the tombstones of mapped tables in short transactions of their own.

    Args:
        tables: the mapped tables (by mapping name), as :class:`ddbcdc.schema.tables.MappedTables`.
        horizon: how far behind the stream's position a change may still arrive.
        chunk: tombstones deleted per transaction.
    """

    def __init__(
        self,
        tables: Sequence[MappedTables],
        *,
        horizon: timedelta,
        chunk: int = _CHUNK,
    ) -> None:
        self.tables = sorted(tables, key=lambda t: t.mapping.target_table)
        self.horizon = horizon
        self.chunk = chunk

    def run(self, engine: sa.Engine) -> int:
        """Prune every table as far as its cutoff allows; how many tombstones went."""
        total = 0
        for tables in self.tables:
            while True:
                pruned = self._chunk(engine, tables)
                if pruned is None:
                    break
                total += pruned
                if pruned < self.chunk:
                    break
        return total

    def _chunk(self, engine: sa.Engine, tables: MappedTables) -> int | None:
        """One transaction: lock, cut off, delete, raise the floor. None: nothing to do."""
        target = tables.mapping.target_table
        try:
            with engine.begin() as conn:
                conn.execute(_LOCK_TIMEOUT)
                if not conn.execute(
                    sa.select(sa.func.pg_try_advisory_xact_lock(lock_key(_PRUNER_KEY)))
                ).scalar():
                    return None  # another process is pruning
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(lock_key(target))))
                limit = cutoff(conn, target, self.horizon, tables.mapping.targets)
                if limit.version_us is None:
                    return None
                return self._delete(conn, tables, limit.version_us)
        except sa.exc.OperationalError as exc:
            if sqlstate(exc) == "55P03":  # busy writers: try again at the next round
                log.info("prune of %s skipped: its lock is busy", target)
                return None
            raise

    def _delete(self, conn: sa.Connection, tables: MappedTables, cutoff_us: int) -> int:
        ver = tables.versions
        key = [ver.c[k] for k in tables.mapping.key]
        doomed = (
            sa.select(*key)
            .where(ver.c._ddbcdc_deleted, ver.c._ddbcdc_version_us < cutoff_us)
            .limit(self.chunk)
        )
        gone = (
            sa.delete(ver)
            .where(sa.tuple_(*key).in_(doomed))
            .returning(ver.c._ddbcdc_version_us)
            .cte("gone")
        )
        count, newest = conn.execute(
            sa.select(sa.func.count(), sa.func.max(gone.c._ddbcdc_version_us))
        ).one()
        if not count:
            return 0
        target = tables.mapping.target_table
        stmt = pg.insert(prune_state).values(
            target_table=target, floor_us=newest, pruned_total=count
        )
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[prune_state.c.target_table],
                set_={
                    "floor_us": sa.func.greatest(prune_state.c.floor_us, stmt.excluded.floor_us),
                    "pruned_total": prune_state.c.pruned_total + count,
                    "pruned_at": sa.func.now(),
                },
            )
        )
        log.info("pruned %d tombstones of %s below %d", count, target, cutoff_us)
        return int(count)
