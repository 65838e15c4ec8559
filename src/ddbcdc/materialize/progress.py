"""Shard progress in ``ddbcdc_shard_progress``: where each shard's batches have got.

Written in each batch's own transaction, so progress and the batch commit together. A row
never moves back: a processor that lost its lease may commit a batch after the new owner's,
so the sequence number only advances and the shard's stream time (the newest change time
applied, which bounds tombstone pruning) only grows.

A batch that could not be applied leaves its reason in ``ddbcdc_shard_failures``
(:func:`record_failure`, in a transaction of its own: the batch's rolled back). It is current
while newer than the progress row: a batch committed since, or an empty batch that touched
the row, ends it without a write.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from ddbcdc.schema.tables import shard_failures, shard_progress

__all__ = ["ShardPosition", "end_shard", "record_failure", "record_progress"]


@dataclass(frozen=True, slots=True)
class ShardPosition:
    """The position a batch ends at, recorded in ``ddbcdc_shard_progress``."""

    application: str
    shard_id: str
    sequence_number: str
    millis_behind_latest: int | None = None


def record_progress(
    conn: sa.Connection, position: ShardPosition, count: int, newest_us: int | None
) -> None:
    """Upsert the shard's progress after a batch of ``count`` records (see the module doc)."""
    table = shard_progress
    stmt = pg.insert(table).values(
        application=position.application,
        shard_id=position.shard_id,
        sequence_number=position.sequence_number,
        records_total=count,
        batches_total=1,
        millis_behind_latest=position.millis_behind_latest,
        max_version_us=newest_us,
    )
    new = stmt.excluded
    ahead = sa.cast(new.sequence_number, sa.Numeric) > sa.cast(table.c.sequence_number, sa.Numeric)
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
                "updated_at": sa.func.now(),
            },
        )
    )


def end_shard(conn: sa.Connection, application: str, shard_id: str) -> None:
    """Mark a shard ended: it brings no more changes, its position no longer counts."""
    conn.execute(
        sa.update(shard_progress)
        .where(
            shard_progress.c.application == application,
            shard_progress.c.shard_id == shard_id,
        )
        .values(ended_at=sa.func.now())
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
