"""Stream time: how far every shard of a stream has got, in change time; it never moves back.

Per application (one KCL application reads one stream), from ``ddbcdc_shard_progress``:

- every shard the worker has listed has a row (:func:`~ddbcdc.materialize.progress.
  register_shards`): the stream's open shards and every shard the KCL still has to read;
  a shard whose processor has applied nothing yet is **not started**;
- a shard's position is the newest change time it has applied (or the present once it is
  caught up and idle); an ended shard no longer counts;
- the stream is at the *oldest* position over its shards that have not ended, and only when
  every one of them has started: a shard that has not started may still bring changes as old
  as the stream keeps, so there is no stream time past it.

The value is kept in ``ddbcdc_stream_time`` and only ever raised. The oldest position can
dip when the set of shards changes (a child shard's first changes may be a little older than
its parent's last ones: DynamoDB delivers a change a moment after it was made); such a dip is
seconds, far inside the tombstone horizon, so the established value stands.

An application whose shards were never listed has no stream time: nothing says which shards
it has.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from ddbcdc.schema.bookkeeping import shard_progress, stream_time

__all__ = ["StreamTime", "stream_times"]


@dataclass(frozen=True, slots=True)
class StreamTime:
    """One application's stream time.

    Attributes:
        application: the KCL application.
        stream_time_us: the stream time established so far (never lower than before), None
            while it has never been known. The worker raises it every few seconds, and
            every prune.
        current: whether ``stream_time_us`` holds now (every open shard has started and the
            shards were listed); False means only what was established before is known.
        open_shards: shards that have not ended.
        not_started: the open shards whose processor has applied nothing yet.
        listed_at: when the worker last listed the shards (None: never).
    """

    application: str
    stream_time_us: int | None
    current: bool
    open_shards: int
    not_started: tuple[str, ...]
    listed_at: datetime | None

    def why_unknown(self) -> str | None:
        """Why this application has no stream time now (None: it has one)."""
        if self.current:
            return None
        if self.listed_at is None:
            return f"the shards of {self.application} were never listed"
        if self.not_started:
            first = self.not_started[0]
            more = f" and {len(self.not_started) - 1} more" if len(self.not_started) > 1 else ""
            return f"shard {first}{more} of {self.application} has not started"
        return f"{self.application} has no open shard"


def stream_times(conn: sa.Connection, *, store: bool) -> list[StreamTime]:
    """Every application's stream time, by application name.

    Args:
        conn: a connection (in a transaction when ``store``).
        store: raise the stored value to the current one where it is higher, and return
            that; without it, the stored value is returned as it is (what every reader
            sees, so no reader sees it move back).
    """
    p = shard_progress
    open_ = p.c.ended_at.is_(None)
    rows = conn.execute(
        sa.select(
            p.c.application,
            sa.func.count().filter(open_),
            sa.func.min(p.c.max_version_us).filter(open_),
            sa.func.array_agg(sa.func.distinct(p.c.shard_id)).filter(
                open_, p.c.max_version_us.is_(None)
            ),
        ).group_by(p.c.application)
    ).all()
    stored = {
        r.application: (r.stream_time_us, r.listed_at)
        for r in conn.execute(
            sa.select(
                stream_time.c.application, stream_time.c.stream_time_us, stream_time.c.listed_at
            )
        )
    }
    result = []
    for application, open_count, oldest, waiting in sorted(rows, key=lambda r: r[0]):
        before, listed_at = stored.get(application, (None, None))
        not_started = tuple(sorted(waiting or ()))
        current = listed_at is not None and open_count > 0 and not not_started
        value = before
        if store and current and (before is None or int(oldest) > before):
            value = int(oldest)
            _raise(conn, application, value)
        result.append(
            StreamTime(application, value, current, int(open_count), not_started, listed_at)
        )
    return result


def _raise(conn: sa.Connection, application: str, value: int) -> None:
    stmt = pg.insert(stream_time).values(application=application, stream_time_us=value)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[stream_time.c.application],
            set_={
                "stream_time_us": sa.func.greatest(
                    stream_time.c.stream_time_us, stmt.excluded.stream_time_us
                ),
                "updated_at": sa.func.now(),
            },
        )
    )
