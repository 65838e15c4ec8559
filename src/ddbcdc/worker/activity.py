"""What a shard processor reports about itself: activity while it works, freshness of commits.

**Activity** (:class:`CallActivity`): a call from the KCL marks the processor active and "in a
call" until it returns; inside a call, a heartbeat thread marks it active every
``heartbeat_s``, so a call that takes minutes (a batch retried while PostgreSQL is down, poison
being isolated) is a busy processor, not a stalled one. A process that is frozen or killed
stops beating, so it is still found (:mod:`ddbcdc.worker.liveness`).

**Freshness** (:func:`observe_commit`): after a batch has committed, per target table, each
change's commit time minus its change time (write-to-commit) and minus its record's arrival
in the stream (arrival-to-commit), and the newest change time committed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from ddbcdc.pipeline import BatchResult
from ddbcdc.worker.metrics import ProcessorMetrics, observe_many

__all__ = ["CallActivity", "observe_commit"]


class CallActivity:
    """The activity and in-call gauges of one shard's processor, with a heartbeat.

    Args:
        metrics: the processor's metrics.
        heartbeat_s: seconds between heartbeats inside a call (0: none).
    """

    def __init__(self, metrics: ProcessorMetrics, *, heartbeat_s: float = 1.0) -> None:
        self.metrics = metrics
        self.heartbeat_s = heartbeat_s
        self.shard_id = "unknown"
        self._inside = threading.Event()
        self._thread: threading.Thread | None = None

    def mark(self) -> None:
        """The processor is active now."""
        self.metrics.last_activity.labels(self.shard_id).set_to_current_time()

    @contextmanager
    def call(self) -> Iterator[None]:
        """Around one call from the KCL: active, in a call, beating until it returns."""
        self.mark()
        self.metrics.in_call.labels(self.shard_id).set(1)
        self._inside.set()
        self._start()
        try:
            yield
        finally:
            self._inside.clear()
            self.metrics.in_call.labels(self.shard_id).set(0)
            self.mark()

    def _start(self) -> None:
        if self._thread is None and self.heartbeat_s > 0:
            self._thread = threading.Thread(target=self._beat, name="ddbcdc-heartbeat", daemon=True)
            self._thread.start()

    def _beat(self) -> None:
        while True:
            self._inside.wait()
            time.sleep(self.heartbeat_s)
            if self._inside.is_set():
                self.mark()


def observe_commit(metrics: ProcessorMetrics, result: BatchResult) -> None:
    """Freshness of a batch that has just committed (see the module doc)."""
    if result.batch is None:
        return
    committed_us = int((result.committed_at or time.time()) * 1_000_000)
    committed_ms = committed_us / 1000
    for table, (created, arrived) in result.batch.change_times().items():
        if not created:
            continue
        observe_many(
            metrics.write_to_commit.labels(table), [(committed_us - c) / 1e6 for c in created]
        )
        known = [a for a in arrived if a is not None] if None in arrived else arrived
        if known:
            observe_many(
                metrics.arrival_to_commit.labels(table),
                [(committed_ms - a) / 1e3 for a in known],  # type: ignore[operator]
            )
        metrics.newest_change.labels(table).set(max(created) / 1e6)
