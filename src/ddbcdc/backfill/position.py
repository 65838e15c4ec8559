"""Has the worker applied every change made before a given time?

``ddbcdc verify`` re-checks a suspected difference only once the worker has passed the time
of its consistent read; otherwise a change still on its way would look like drift. Per shard
of the stream, the worker has passed ``t`` when

- its progress row (``ddbcdc_shard_progress``) holds a change newer than ``t`` plus the
  clock-skew margin (records of a shard are applied in order), or
- the stream has nothing after the shard's last applied record that was made before that:
  one GetRecords after the applied sequence number (TRIM_HORIZON without a progress row)
  finds no record, or a first unapplied record made after ``t`` plus the margin. An idle
  shard's progress does not move, so this asks the stream (Kinesis or DynamoDB Streams:
  :mod:`ddbcdc.aws.streams`).

Without a stream in the settings and without any shard progress the copy is not fed by a
stream (a static copy): nothing is on its way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import sqlalchemy as sa

from ddbcdc.aws.streams import Stream
from ddbcdc.backfill.records import now_us
from ddbcdc.decode.record import TimestampUnit
from ddbcdc.schema.bookkeeping import shard_progress

__all__ = ["WorkerWatch"]

log = logging.getLogger(__name__)


class WorkerWatch:
    """Answers :meth:`passed` from shard progress and, for idle shards, the stream.

    Args:
        engine: PostgreSQL (shard progress).
        stream: the stream the worker reads (:func:`ddbcdc.aws.streams.open_stream`), or
            None when none is configured.
        application: the KCL application name (shard progress rows).
        margin_us: the clock-skew margin.
        timestamp_unit: how the stream's records carry ApproximateCreationDateTime.
    """

    def __init__(
        self,
        *,
        engine: sa.Engine,
        stream: Stream | None,
        application: str,
        margin_us: int,
        timestamp_unit: TimestampUnit = "auto",
        clock: Callable[[], int] = now_us,
    ) -> None:
        self.engine = engine
        self.stream = stream
        self.application = application
        self.margin_us = margin_us
        self.unit: TimestampUnit = timestamp_unit
        self._clock = clock

    def _progress(self) -> dict[str, tuple[str, int | None, bool]]:
        p = shard_progress
        query = sa.select(p.c.shard_id, p.c.sequence_number, p.c.max_version_us, p.c.ended_at)
        with self.engine.connect() as conn:
            rows = conn.execute(query.where(p.c.application == self.application)).all()
        return {
            r.shard_id: (r.sequence_number, r.max_version_us, r.ended_at is not None) for r in rows
        }

    def passed(self, t_us: int) -> bool:
        """Whether every change made at or before ``t_us`` has been applied."""
        limit = t_us + self.margin_us
        progress = self._progress()
        if self.stream is None:
            active = [newest for _, newest, ended in progress.values() if not ended]
            return all(newest is not None and newest > limit for newest in active)
        if self._clock() < limit + self.margin_us:
            return False  # a change made before t may not have reached the stream yet
        for shard in self.stream.shards():
            sequence, newest, ended = progress.get(shard.shard_id, (None, None, False))
            if ended or (newest is not None and newest > limit):
                continue
            made = self.stream.next_change_us(shard.shard_id, sequence, unit=self.unit)
            if made is False or (made is not None and made <= limit):
                return False
        return True

    def wait_passed(
        self, t_us: int, *, timeout: float, sleep: Callable[[float], None] = time.sleep
    ) -> bool:
        """Wait up to ``timeout`` seconds for :meth:`passed`; whether it came true."""
        deadline = time.monotonic() + timeout
        while True:
            if self.passed(t_us):
                return True
            if time.monotonic() >= deadline:
                log.warning("the worker did not pass %d within %.0fs", t_us, timeout)
                return False
            sleep(1.0)
