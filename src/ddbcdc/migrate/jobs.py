"""Backfill jobs: the columns a migration added, filled in resumable batches.

A backfill belongs to a target table (``ddbcdc_backfills``): the columns to fill, the kept
column they come from (the whole item when the mapping keeps it, else the unmapped
attributes) and the last key done. :func:`schedule_backfill` records one in the migration's
transaction; :func:`run_backfill` runs it, a batch per transaction: the next rows in key
order, locked (``FOR UPDATE``: a writer of the same key waits, then writes over the result)
after the keys' versions rows, in key order too, filled by a
:class:`~ddbcdc.migrate.fill.Filler`, the job row moved on in the same transaction.

Every writer holds a key's versions row before it touches the live row, so taking them first
lets a batch of writes that holds some of them finish before the backfill locks any live
row: locking live rows alone, a batch that upserts one live row and then deletes another
could wait for the backfill while the backfill waits for it (a deadlock).

An interrupted backfill resumes where it stopped, and running a batch twice changes nothing.
A conflict (a lock timeout, a deadlock) runs the batch again; when it persists, the backfill
stops with an error naming it, resumable.

A routed mapping's job, under the mapping's name, is the fill of its new routes from its
catch-all (:mod:`ddbcdc.migrate.moves`), run by the same two helpers: :func:`job_row` and
:func:`run_batch`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from ddbcdc.db import RefusedError, run_transaction
from ddbcdc.errors import DatabaseUnavailableError
from ddbcdc.migrate.fill import BackfillReport, Filler
from ddbcdc.schema.bookkeeping import backfills
from ddbcdc.schema.mapping import TableMapping

__all__ = ["advance_job", "job_row", "run_backfill", "run_batch", "schedule_backfill"]

T = TypeVar("T")


def schedule_backfill(
    conn: sa.Connection, mapping: TableMapping, columns: Sequence[str], source: str
) -> None:
    """Record a backfill of ``columns`` from ``source`` (in the migration's transaction).

    An unfinished one of the same table takes the new columns too and starts over: a row
    done already is not changed by a second pass.
    """
    stmt = pg.insert(backfills).values(
        target_table=mapping.target_table,
        columns=list(columns),
        source_column=source,
        rows_done=0,
        dead_lettered=0,
    )
    job = backfills.c
    merged = sa.case(
        (job.finished_at.is_(None), sa.func.array_cat(job.columns, stmt.excluded.columns)),
        else_=stmt.excluded.columns,
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[job.target_table],
            set_={
                "columns": merged,
                "source_column": stmt.excluded.source_column,
                "after_key": None,
                "rows_done": 0,
                "dead_lettered": 0,
                "started_at": sa.func.now(),
                "finished_at": None,
            },
        )
    )


def job_row(conn: sa.Connection, target: str) -> sa.Row[Any] | None:
    """The backfill job of a table (locked until the transaction ends), None when none."""
    query = sa.select(backfills).where(backfills.c.target_table == target).with_for_update()
    return conn.execute(query).first()


def _finish(conn: sa.Connection, target: str) -> None:
    conn.execute(
        sa.update(backfills)
        .where(backfills.c.target_table == target)
        .values(finished_at=sa.func.now())
    )


def run_batch(engine: sa.Engine, target: str, work: Callable[[sa.Connection], T]) -> T:
    """``work`` in a transaction of its own, run again while it conflicts with others.

    Raises:
        DatabaseUnavailableError: PostgreSQL unreachable or refusing, or conflicts that
            persist (nothing of ``work`` committed: the next run resumes there).
    """
    try:
        return run_transaction(engine, work)
    except DatabaseUnavailableError as exc:
        raise DatabaseUnavailableError(f"backfill of {target} stopped: {exc}") from exc
    except RefusedError as exc:  # the job row or a dead letter, not a row of the table
        raise DatabaseUnavailableError(f"backfill of {target} refused: {exc}") from exc


def _batch(engine: sa.Engine, filler: Filler, batch_size: int) -> tuple[BackfillReport, bool]:
    """One batch in one transaction, the job row moved on in it: (report, more to do); run
    again while it conflicts with other transactions (a lock timeout, a deadlock)."""
    target = filler.mapping.target_table
    return run_batch(engine, target, lambda conn: _batch_in(conn, filler, batch_size))


def _batch_in(conn: sa.Connection, filler: Filler, batch_size: int) -> tuple[BackfillReport, bool]:
    """:func:`_batch`'s transaction."""
    target = filler.mapping.target_table
    job = job_row(conn, target)
    assert job is not None
    after = filler.decode_key(job.after_key) if job.after_key is not None else None
    rows = filler.lock(conn, after, batch_size)
    report = filler.fill(conn, rows)
    after_key = filler.encode_key(filler.key_of(rows[-1]._mapping)) if rows else None
    advance_job(conn, target, rows=report.rows, dead_lettered=report.dead_lettered, after=after_key)
    return report, bool(rows)


def advance_job(
    conn: sa.Connection, target: str, *, rows: int, dead_lettered: int, after: str | None
) -> None:
    """Move the table's job row on by one batch (in the batch's transaction): its counts, and
    the key the batch ended at (None: nothing was left, the job is finished)."""
    values: dict[str, Any] = {
        "rows_done": backfills.c.rows_done + rows,
        "dead_lettered": backfills.c.dead_lettered + dead_lettered,
    }
    if after is not None:
        values["after_key"] = after
    else:
        values["finished_at"] = sa.func.now()
    conn.execute(sa.update(backfills).where(backfills.c.target_table == target).values(values))


def run_backfill(
    engine: sa.Engine,
    mapping: TableMapping,
    *,
    batch_size: int = 1000,
    max_batches: int | None = None,
    on_batch: Callable[[BackfillReport], None] | None = None,
    routed: TableMapping | None = None,
) -> BackfillReport | None:
    """Run the table's pending backfill to its end (or ``max_batches`` batches of it).
    ``routed``: the routed mapping, when ``mapping`` is one of its routes.

    Returns:
        What this run did, None when no backfill was pending.

    Raises:
        DatabaseUnavailableError: PostgreSQL unreachable or refusing, or conflicts that
            persist; the batches before are committed, the next run resumes after them.
    """
    target = mapping.target_table
    job = run_batch(engine, target, lambda conn: job_row(conn, target))
    if job is None or job.finished_at is not None:
        return None
    if job.source_column not in mapping.stored_columns:  # dropped since: nothing to read
        run_batch(engine, target, lambda conn: _finish(conn, target))
        return BackfillReport(mapping.target_table, [], finished=True)
    known = {c.name for c in mapping.columns}
    columns = [c for c in job.columns if c in known]
    filler = Filler(mapping, columns, job.source_column, routed=routed)
    total = BackfillReport(mapping.target_table, [c.name for c in filler.columns])
    batches = 0
    while max_batches is None or batches < max_batches:
        report, more = _batch(engine, filler, batch_size)
        batches += 1
        total.add(report)
        if on_batch is not None:
            on_batch(report)
        if not more:
            total.finished = True
            break
    return total
