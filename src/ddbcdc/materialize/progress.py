"""Shard progress in ``ddbcdc_shard_progress``: where each shard's batches have got.

Written in each batch's own transaction, so progress and the batch commit together. A row
never moves back: a processor that lost its lease may commit a batch after the new owner's,
so the sequence number only advances and the shard's stream time (the newest change time
applied, which bounds tombstone pruning) only grows.

A shard has a row before its first batch too: the worker registers every shard it lists (an
open shard of the stream, a lease of the KCL) as **not started** (no sequence number, no
stream time), and a processor that is caught up before any record marks its shard started
at the present (:func:`touch`). A shard that has ended keeps its row, marked ended.

Each batch also records, per target table it wrote, the newest change time committed and
when (``ddbcdc_table_progress``): what ``ddbcdc status`` shows as the table's freshness.

A batch that could not be applied leaves its reason in ``ddbcdc_shard_failures``
(:func:`record_failure`, in a transaction of its own: the batch's rolled back). It is current
while newer than the progress row: a batch committed since, or an empty batch that touched
the row, ends it without a write.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from ddbcdc.schema.bookkeeping import shard_failures, shard_progress, stream_time, table_progress

__all__ = [
    "ShardPosition",
    "end_shard",
    "record_failure",
    "record_progress",
    "register_shards",
    "touch",
]


@dataclass(frozen=True, slots=True)
class ShardPosition:
    """The position a batch ends at, recorded in ``ddbcdc_shard_progress``."""

    application: str
    shard_id: str
    sequence_number: str
    millis_behind_latest: int | None = None


def _present_us() -> sa.ColumnElement[Any]:
    return sa.cast(sa.func.extract("epoch", sa.func.now()) * 1_000_000, sa.BigInteger)


def record_progress(
    conn: sa.Connection,
    position: ShardPosition,
    count: int,
    newest_us: int | None,
    tables: Mapping[str, int] | None = None,
) -> None:
    """Upsert the shard's progress after a batch of ``count`` records (see the module doc).

    Args:
        conn: the batch's connection, in its transaction.
        position: where the batch ends.
        count: records in the batch.
        newest_us: the newest change time among them (None: none decoded).
        tables: per target table written, the newest change time of the batch.
    """
    table = shard_progress
    stmt = pg.insert(table).values(
        application=position.application,
        shard_id=position.shard_id,
        sequence_number=position.sequence_number,
        records_total=count,
        batches_total=1,
        millis_behind_latest=position.millis_behind_latest,
        max_version_us=newest_us,
        # The statement runs last in the batch's transaction: when the batch ended, not when
        # it began (now()), or a batch longer than the stall threshold would show stalled.
        updated_at=sa.func.clock_timestamp(),
    )
    new = stmt.excluded
    ahead = sa.or_(
        table.c.sequence_number.is_(None),
        sa.cast(new.sequence_number, sa.Numeric) > sa.cast(table.c.sequence_number, sa.Numeric),
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[table.c.application, table.c.shard_id],
            set_={
                "sequence_number": sa.case(
                    (ahead, new.sequence_number), else_=table.c.sequence_number
                ),
                "millis_behind_latest": sa.case(
                    (ahead, new.millis_behind_latest), else_=table.c.millis_behind_latest
                ),
                "records_total": table.c.records_total + count,
                "batches_total": table.c.batches_total + 1,
                "max_version_us": sa.func.greatest(table.c.max_version_us, new.max_version_us),
                "updated_at": new.updated_at,
            },
        )
    )
    if tables:
        _record_tables(conn, position, tables)


def _record_tables(conn: sa.Connection, position: ShardPosition, tables: Mapping[str, int]) -> None:
    """Per table: the newest change time committed by this shard, and when it was committed
    (the statement runs last in the batch's transaction: its clock is the commit's, to within
    the commit itself)."""
    table = table_progress
    stmt = pg.insert(table).values(
        [
            {
                "application": position.application,
                "shard_id": position.shard_id,
                "target_table": target,
                "newest_change_us": newest,
                "committed_at": sa.func.clock_timestamp(),
            }
            for target, newest in sorted(tables.items())
        ]
    )
    newer = stmt.excluded.newest_change_us > table.c.newest_change_us
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[table.c.application, table.c.shard_id, table.c.target_table],
            set_={
                "newest_change_us": sa.func.greatest(
                    table.c.newest_change_us, stmt.excluded.newest_change_us
                ),
                "committed_at": sa.case(
                    (newer, stmt.excluded.committed_at), else_=table.c.committed_at
                ),
            },
        )
    )


def _row(application: str, shard_id: str, **values: Any) -> Any:
    """An upsert of a shard's row that starts it "not started" when it does not exist."""
    return pg.insert(shard_progress).values(
        application=application,
        shard_id=shard_id,
        records_total=0,
        batches_total=0,
        **values,
    )


def end_shard(conn: sa.Connection, application: str, shard_id: str) -> None:
    """Mark a shard ended: it brings no more changes, its position no longer counts."""
    table = shard_progress
    stmt = _row(application, shard_id, ended_at=sa.func.now())
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[table.c.application, table.c.shard_id],
            set_={"ended_at": sa.func.coalesce(table.c.ended_at, sa.func.now())},
        )
    )


def record_failure(
    conn: sa.Connection,
    position: ShardPosition,
    reason: str,
    error: str,
) -> None:
    """Note that the batch ending at ``position`` failed with ``reason`` (``error``: one line,
    no values). Attempts count on, and ``since`` stays, while no batch or touch of the shard's
    progress row came after the previous failure."""
    f, p = shard_failures, shard_progress
    stmt = pg.insert(f).values(
        application=position.application,
        shard_id=position.shard_id,
        reason=reason,
        error=error,
        sequence_number=position.sequence_number,
        attempts=1,
    )
    progressed = (
        sa.select(p.c.updated_at)
        .where(p.c.application == f.c.application, p.c.shard_id == f.c.shard_id)
        .scalar_subquery()
    )
    ongoing = f.c.failed_at >= sa.func.coalesce(progressed, f.c.failed_at)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[f.c.application, f.c.shard_id],
            set_={
                "reason": stmt.excluded.reason,
                "error": stmt.excluded.error,
                "sequence_number": stmt.excluded.sequence_number,
                "attempts": sa.case((ongoing, f.c.attempts + 1), else_=1),
                "since": sa.case((ongoing, f.c.since), else_=sa.func.now()),
                "failed_at": sa.func.now(),
            },
        )
    )


def touch(
    conn: sa.Connection, application: str, shard_id: str, millis_behind_latest: int | None
) -> None:
    """An empty batch: the shard's processor was called (``updated_at``), with its lag.

    Caught up (MillisBehindLatest 0) and idle, the shard has delivered every change made
    before now, so its stream time is the present: tombstone pruning must not wait on an idle
    shard (a change DynamoDB delivers late is what the horizon is for), and a shard that is
    caught up before its first record has started.
    """
    table = shard_progress
    present = _present_us() if millis_behind_latest == 0 else None
    stmt = _row(
        application,
        shard_id,
        millis_behind_latest=millis_behind_latest,
        max_version_us=present,
    )
    values: dict[str, Any] = {"updated_at": sa.func.now()}
    if millis_behind_latest is not None:
        values["millis_behind_latest"] = millis_behind_latest
    if present is not None:
        values["max_version_us"] = sa.func.greatest(table.c.max_version_us, present)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[table.c.application, table.c.shard_id], set_=values
        )
    )


def register_shards(conn: sa.Connection, application: str, shard_ids: Collection[str]) -> int:
    """Record the shards the worker listed: a row "not started" for each one without a row.

    ``shard_ids`` is the whole list (every open shard, every shard the KCL still has to
    read): a not-started row of a shard no longer in it is removed (the shard ended before
    its processor ever ran, or its lease went away), and the application's ``listed_at`` is
    set. Returns how many rows were added.
    """
    table = shard_progress
    added = 0
    if shard_ids:
        stmt = pg.insert(table).values(
            [
                {
                    "application": application,
                    "shard_id": shard,
                    "records_total": 0,
                    "batches_total": 0,
                }
                for shard in sorted(shard_ids)
            ]
        )
        # Counted from RETURNING: this statement's rowcount comes back as -1.
        inserted = stmt.on_conflict_do_nothing().returning(table.c.shard_id)
        added = len(conn.execute(inserted).all())
    conn.execute(
        sa.delete(table).where(
            table.c.application == application,
            table.c.sequence_number.is_(None),
            table.c.max_version_us.is_(None),
            table.c.ended_at.is_(None),
            table.c.shard_id.not_in(sorted(shard_ids)),
        )
    )
    listed = pg.insert(stream_time).values(application=application, listed_at=sa.func.now())
    conn.execute(
        listed.on_conflict_do_update(
            index_elements=[stream_time.c.application],
            set_={"listed_at": listed.excluded.listed_at},
        )
    )
    return int(added)
