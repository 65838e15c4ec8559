"""Backfill runs in PostgreSQL: ``ddbcdc_snapshots`` and ``ddbcdc_snapshot_segments``.

A run (a segmented Scan of the live table, or the import of an export) is created in one
transaction with its segments (scan segments, or export data files) and its **prune hold**
(:func:`ddbcdc.materialize.prune.hold`) at the lowest version it will write, after checking
that version against the table's prune floor. Each segment's position (a Scan's
LastEvaluatedKey, an export file's line) is advanced by :func:`advance` inside the
transaction of the rows it follows (``Pipeline.apply(also=...)``), so a killed run continues
exactly after the last page that committed. :func:`finish` marks the run done and releases
its hold in one transaction; until then the hold stays, across kills and resumes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from ddbcdc.backfill.records import format_us
from ddbcdc.db import describe, sqlstate
from ddbcdc.errors import ConfigurationError, DatabaseUnavailableError
from ddbcdc.materialize.prune import hold, lock_key, release
from ddbcdc.schema.bookkeeping import prune_state, snapshot_segments, snapshots

__all__ = [
    "BelowFloorError",
    "Run",
    "Segment",
    "abandon",
    "advance",
    "claim",
    "find_running",
    "finish",
    "forget",
    "holder_of",
    "load_run",
    "load_segments",
    "mark_done",
    "reassert",
    "recent_runs",
    "start_run",
]


class BelowFloorError(ConfigurationError):
    """A backfill would write versions at or below its table's tombstone prune floor."""


@dataclass(frozen=True)
class Run:
    """One backfill run, as stored in ``ddbcdc_snapshots``."""

    id: str
    kind: str  # scan | export | incremental_export
    source_table: str
    target_table: str
    source: str
    segments: int
    min_version_us: int
    expected_items: int | None = None
    status: str = "running"
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Segment:
    """One segment of a run: where it stands."""

    segment: int
    name: str | None = None
    position: Any = None
    done: bool = False
    items: int = 0
    pages: int = 0


def holder_of(run_id: str) -> str:
    """The name of a run's prune hold in ``ddbcdc_prune_holds``."""
    return f"backfill:{run_id}"


def _check_floor(conn: sa.Connection, run: Run, what: str) -> None:
    floor = conn.execute(
        sa.select(prune_state.c.floor_us).where(prune_state.c.target_table == run.target_table)
    ).scalar()
    if floor is not None and run.min_version_us <= floor:
        raise BelowFloorError(
            f"{what} {format_us(run.min_version_us)} is at or below the tombstone prune floor "
            f"of table {run.target_table} ({format_us(int(floor))}): tombstones of items "
            "deleted since may be gone, so its rows could bring deleted items back. Take a "
            "newer export (or snapshot), or raise DDBCDC_TOMBSTONE_HORIZON so that tombstones "
            "are kept longer"
        )


def _engine_call(engine: sa.Engine, work: Any) -> Any:
    try:
        with engine.begin() as conn:
            return work(conn)
    except sa.exc.IntegrityError as exc:
        if sqlstate(exc) == "23505":
            raise ConfigurationError(
                "another backfill of this table is unfinished: continue it with --resume, "
                "or abandon it with --restart"
            ) from exc
        raise DatabaseUnavailableError(f"PostgreSQL: {describe(exc)}") from exc
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        raise DatabaseUnavailableError(f"PostgreSQL: {describe(exc)}") from exc


@contextlib.contextmanager
def claim(engine: sa.Engine, run_id: str) -> Iterator[None]:
    """Run ``run_id`` in this process only, while the block runs: a session advisory lock on
    a connection of its own (PostgreSQL releases it when the process dies, however).

    Raises:
        ConfigurationError: another process runs it now (a second one would scan the same
            segments again and move their positions back and forth).
    """
    try:
        conn = engine.connect()
        key = lock_key(f"backfill:{run_id}")
        taken = conn.execute(sa.select(sa.func.pg_try_advisory_lock(key))).scalar()
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        raise DatabaseUnavailableError(f"PostgreSQL: {describe(exc)}") from exc
    try:
        if not taken:
            raise ConfigurationError(
                f"backfill {run_id} is running in another process now (PostgreSQL backend "
                f"{_holder(conn, key) or 'unknown'}): let it finish (ddbcdc status), or stop it "
                "and then continue it here"
            )
        yield
    finally:
        conn.invalidate()  # the session ends, and its lock with it: never back in the pool
        conn.close()


def running_in(conn: sa.Connection, run_id: str) -> int | None:
    """The PostgreSQL backend (pid) of the process running ``run_id`` now (:func:`claim`), or
    None: no process runs it."""
    return _holder(conn, lock_key(f"backfill:{run_id}"))


def _holder(conn: sa.Connection, key: int) -> int | None:
    """The pid of the backend holding session advisory lock ``key`` (pg_locks shows a 64-bit
    key as two oids), or None."""
    unsigned = key % 2**64
    locks = sa.table(
        "pg_locks", sa.column("pid"), sa.column("locktype"), sa.column("classid"),
        sa.column("objid"), sa.column("objsubid"), sa.column("granted"),
    )  # fmt: skip
    query = sa.select(locks.c.pid).where(
        locks.c.locktype == "advisory",
        locks.c.classid == sa.cast(sa.literal(unsigned >> 32), pg.OID),
        locks.c.objid == sa.cast(sa.literal(unsigned & 0xFFFFFFFF), pg.OID),
        locks.c.objsubid == 1,
        locks.c.granted,
    )
    pid = conn.execute(query).scalar()
    return None if pid is None else int(pid)


def _insert(conn: sa.Connection, run: Run, segments: Sequence[Segment]) -> None:
    conn.execute(
        sa.insert(snapshots).values(
            id=run.id,
            kind=run.kind,
            source_table=run.source_table,
            target_table=run.target_table,
            source=run.source,
            segments=run.segments,
            min_version_us=run.min_version_us,
            expected_items=run.expected_items,
            status="running",
            detail=run.detail,
        )
    )
    rows = [
        {
            "snapshot_id": run.id,
            "segment": s.segment,
            "name": s.name,
            "position": s.position,
            "done": s.done,
            "items": s.items,
            "pages": s.pages,
        }
        for s in segments
    ]
    if rows:
        conn.execute(sa.insert(snapshot_segments), rows)


def start_run(engine: sa.Engine, run: Run, segments: Sequence[Segment], *, what: str) -> None:
    """Create ``run`` with its segments and its prune hold, in one transaction.

    ``what`` names the run's lowest version in the floor error ("export time", ...).

    Raises:
        BelowFloorError: ``run.min_version_us`` is at or below the table's prune floor.
        ConfigurationError: another run of the table is unfinished.
    """

    def work(conn: sa.Connection) -> None:
        hold(conn, holder_of(run.id), run.min_version_us, run.target_table)
        _check_floor(conn, run, what)  # after the hold: no prune can raise the floor now
        _insert(conn, run, segments)

    _engine_call(engine, work)


def reassert(engine: sa.Engine, run: Run, *, what: str) -> None:
    """Before a resumed run goes on: its hold again (a no-op when it is there), the floor
    checked again.

    Raises:
        BelowFloorError: the floor rose to the run's version meanwhile (its hold was gone).
    """

    def work(conn: sa.Connection) -> None:
        hold(conn, holder_of(run.id), run.min_version_us, run.target_table)
        _check_floor(conn, run, what)

    _engine_call(engine, work)


def forget(engine: sa.Engine, run_id: str) -> None:
    """Delete an abandoned run and its segments (an export imported again takes its id)."""
    stmt = sa.delete(snapshots).where(snapshots.c.id == run_id, snapshots.c.status == "abandoned")
    _engine_call(engine, lambda conn: conn.execute(stmt))


def _run_of(row: Any) -> Run:
    return Run(
        id=row.id,
        kind=row.kind,
        source_table=row.source_table,
        target_table=row.target_table,
        source=row.source,
        segments=row.segments,
        min_version_us=row.min_version_us,
        expected_items=row.expected_items,
        status=row.status,
        detail=dict(row.detail),
    )


def find_running(engine: sa.Engine, target_table: str) -> Run | None:
    """The unfinished run of ``target_table``, if any."""
    query = sa.select(snapshots).where(
        snapshots.c.target_table == target_table, snapshots.c.status == "running"
    )
    row = _engine_call(engine, lambda conn: conn.execute(query).first())
    return None if row is None else _run_of(row)


def load_run(engine: sa.Engine, run_id: str) -> Run | None:
    """The run with this id, if any."""
    query = sa.select(snapshots).where(snapshots.c.id == run_id)
    row = _engine_call(engine, lambda conn: conn.execute(query).first())
    return None if row is None else _run_of(row)


def load_segments(engine: sa.Engine, run_id: str) -> list[Segment]:
    """The segments of a run, in order."""
    s = snapshot_segments
    query = sa.select(s).where(s.c.snapshot_id == run_id).order_by(s.c.segment)
    rows = _engine_call(engine, lambda conn: list(conn.execute(query)))
    return [Segment(r.segment, r.name, r.position, r.done, r.items, r.pages) for r in rows]


def advance(
    conn: sa.Connection, run_id: str, segment: int, position: Any, items: int, *, done: bool
) -> None:
    """Move a segment on, in the transaction of the rows it follows (one statement: it runs
    with every batch)."""
    s = snapshot_segments
    conn.execute(
        sa.update(s)
        .where(s.c.snapshot_id == run_id, s.c.segment == segment)
        .values(
            position=position,
            done=done,
            items=s.c["items"] + items,
            pages=s.c.pages + 1,
            updated_at=sa.func.now(),
        )
    )


def mark_done(engine: sa.Engine, run_id: str, segment: int) -> None:
    """Mark a segment done (its last batch committed already)."""
    s = snapshot_segments
    stmt = (
        sa.update(s)
        .where(s.c.snapshot_id == run_id, s.c.segment == segment)
        .values(done=True, updated_at=sa.func.now())
    )
    _engine_call(engine, lambda conn: conn.execute(stmt))


def _close(engine: sa.Engine, run_id: str, status: str) -> None:
    def work(conn: sa.Connection) -> None:
        conn.execute(
            sa.update(snapshots)
            .where(snapshots.c.id == run_id)
            .values(status=status, finished_at=sa.func.now(), updated_at=sa.func.now())
        )
        release(conn, holder_of(run_id))

    _engine_call(engine, work)


def finish(engine: sa.Engine, run_id: str) -> None:
    """Mark a run done and release its prune hold (one transaction).

    Raises:
        ConfigurationError: a segment is not done.
    """
    pending = [s.segment for s in load_segments(engine, run_id) if not s.done]
    if pending:
        raise ConfigurationError(f"backfill {run_id} has unfinished segments: {pending[:10]}")
    _close(engine, run_id, "done")


def abandon(engine: sa.Engine, run_id: str) -> None:
    """Give up on an unfinished run: its rows stay, its hold goes (``--restart``)."""
    _close(engine, run_id, "abandoned")


def recent_runs(conn: sa.Connection, limit: int = 10) -> list[dict[str, Any]]:
    """The newest runs with their progress and, of a running one, the PostgreSQL backend of
    the process running it (``process``: None when none does), for ``ddbcdc status``."""
    s, seg = snapshots, snapshot_segments
    done = sa.func.count().filter(seg.c.done)
    updated = sa.func.greatest(s.c.updated_at, sa.func.max(seg.c.updated_at))
    columns = [c for c in s.c if c.name != "updated_at"]
    query = (
        sa.select(
            *columns,
            updated.label("updated_at"),
            sa.func.coalesce(sa.func.sum(seg.c["items"]), 0).label("items"),
            done.label("segments_done"),
        )
        .select_from(s.outerjoin(seg, seg.c.snapshot_id == s.c.id))
        .group_by(s.c.id)
        .order_by((s.c.status == "running").desc(), s.c.started_at.desc())
        .limit(limit)
    )
    runs = [dict(row._mapping) for row in conn.execute(query)]
    for run in runs:
        run["process"] = running_in(conn, run["id"]) if run["status"] == "running" else None
    return runs
