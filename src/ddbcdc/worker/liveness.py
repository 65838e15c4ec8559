"""Stalled shards: a lease this worker holds whose processor is no longer called.

The KCL calls every shard processor at least once per ``idleTimeBetweenReadsInMillis``, empty
batches included (``callProcessRecordsEvenForEmptyRecordList``), so a processor that has not
been called for a while means nothing reads that shard, whatever its last MillisBehindLatest
said. Three views of it:

* the shard processors record their last activity (a call, or a wait between retries of a
  batch) and whether they are inside a call, in two gauges
  (:class:`~ddbcdc.worker.metrics.ProcessorMetrics`);
* ``ddbcdc worker`` reads the KCL lease table for the leases it holds (:class:`LeaseWatcher`)
  and joins both in :class:`StallMonitor`: ``/healthz`` fails and
  ``ddbcdc_worker_shard_stalled`` turns 1 for a held shard without activity for longer than
  the threshold (a batch retried while PostgreSQL is down is activity; a processor hung in a
  call, or never started, is not);
* each processor touches its ``ddbcdc_shard_progress`` row on empty batches
  (:class:`ProgressTouch`), so ``ddbcdc status`` tells a stalled shard from an idle one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "LeaseWatcher",
    "ProcessorCalls",
    "ProgressTouch",
    "ShardHealth",
    "StallMonitor",
]

log = logging.getLogger(__name__)

SHARD_END = "SHARD_END"


class ProgressTouch:
    """Keeps a shard's progress row fresh between non-empty batches.

    Called on every empty batch; at most once per ``every_s`` it sets the row's ``updated_at``
    (and MillisBehindLatest, when known) in its own small statement; when the shard is caught
    up (MillisBehindLatest 0) its stream time moves to the present. A failure is logged and
    never raised: the touch is a liveness signal, not part of applying records.

    Args:
        engine: the pipeline's engine.
        application: the progress row's application.
        every_s: the least time between two touches of one shard.
        clock: monotonic seconds (tests pass a fake one).
    """

    def __init__(
        self,
        engine: sa.Engine,
        application: str,
        *,
        every_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from ddbcdc.schema.tables import shard_progress

        self.engine = engine
        self.application = application
        self.every_s = every_s
        self._clock = clock
        self._table = shard_progress
        self._last: float | None = None
        self._failing = False

    def __call__(self, shard_id: str, millis_behind_latest: int | None) -> bool:
        """Touch the row if the last touch is old enough; whether a row was touched."""
        now = self._clock()
        if self._last is not None and now - self._last < self.every_s:
            return False
        self._last = now
        table = self._table
        values: dict[str, Any] = {"updated_at": sa.func.now()}
        if millis_behind_latest is not None:
            values["millis_behind_latest"] = millis_behind_latest
        if millis_behind_latest == 0:
            # Caught up and idle: the shard has delivered every change made before now, so
            # its stream time is the present (tombstone pruning must not wait on an idle
            # shard; a change DynamoDB delivers late is what the horizon is for).
            present = sa.cast(sa.func.extract("epoch", sa.func.now()) * 1_000_000, sa.BigInteger)
            values["max_version_us"] = sa.func.greatest(table.c.max_version_us, present)
        stmt = (
            sa.update(table)
            .where(table.c.application == self.application, table.c.shard_id == shard_id)
            .values(values)
        )
        try:
            with self.engine.begin() as conn:
                touched = conn.execute(stmt).rowcount > 0
        except sa.exc.SQLAlchemyError as exc:
            if not self._failing:
                log.warning("progress touch failed shard=%s error=%s", shard_id, type(exc).__name__)
            self._failing = True
            return False
        self._failing = False
        return touched


@dataclass(frozen=True, slots=True)
class ProcessorCalls:
    """What the shard processors' gauges say about one shard."""

    last_activity: float
    in_call: bool


@dataclass(frozen=True, slots=True)
class ShardHealth:
    """One held shard as the stall monitor sees it.

    Attributes:
        shard_id: the shard.
        age_s: seconds since its processor's last activity (since the lease was first seen
            held, while no live processor has reported).
        in_call: a call is running right now (a batch being applied or retried).
        stalled: held, and no activity for longer than the threshold.
    """

    shard_id: str
    age_s: float
    in_call: bool
    stalled: bool

    def describe(self) -> str:
        """One ``key=value`` line for ``/healthz``."""
        state = "stalled" if self.stalled else "busy" if self.in_call else "ok"
        return f"shard={self.shard_id} state={state} last_activity_age_s={self.age_s:.1f}"


class LeaseWatcher:
    """The leases one worker holds, read from the KCL lease table every ``every_s``.

    A lease is held when its ``leaseOwner`` is this worker and the shard has not ended. The
    view is kept as of the last successful read, with the time each lease was first seen held.

    Args:
        scan: returns the lease table's items (DynamoDB JSON), e.g. a paginated Scan.
        worker_id: this worker's KCL worker id.
        every_s: seconds between reads.
        clock: wall-clock seconds.
    """

    def __init__(
        self,
        scan: Callable[[], Iterable[Mapping[str, Any]]],
        worker_id: str,
        *,
        every_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.scan = scan
        self.worker_id = worker_id
        self.every_s = every_s
        self._clock = clock
        self._lock = threading.Lock()
        self._held: dict[str, float] = {}
        self._read_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ddbcdc-leases", daemon=True)

    def refresh(self) -> None:
        """Read the lease table once; on failure keep the previous view."""
        try:
            items = list(self.scan())
        except Exception as exc:  # the lease table may be briefly unreachable
            log.warning("lease table not readable: %s", type(exc).__name__)
            return
        now = self._clock()
        held = {
            item["leaseKey"]["S"]
            for item in items
            if item.get("leaseOwner", {}).get("S") == self.worker_id
            and item.get("checkpoint", {}).get("S") != SHARD_END
        }
        with self._lock:
            self._held = {shard: self._held.get(shard, now) for shard in held}
            self._read_at = now

    def held(self) -> tuple[dict[str, float], float | None]:
        """(shard -> first seen held, wall-clock time of the last successful read)."""
        with self._lock:
            return dict(self._held), self._read_at

    def start(self) -> None:
        """Read now, then every ``every_s`` in a daemon thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the reading thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.every_s + 30)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.refresh()
            self._stop.wait(self.every_s)


class StallMonitor(Collector):
    """Joins held leases with processor calls: ``/healthz`` problems and per-shard gauges.

    Args:
        leases: the worker's :class:`LeaseWatcher`.
        calls: reads the processors' gauges: shard -> :class:`ProcessorCalls`.
        stall_after_s: a held shard with no call for longer than this is stalled.
        clock: wall-clock seconds (the processors' gauges are wall-clock timestamps).
    """

    def __init__(
        self,
        leases: LeaseWatcher,
        calls: Callable[[], Mapping[str, ProcessorCalls]],
        *,
        stall_after_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.leases = leases
        self.calls = calls
        self.stall_after_s = stall_after_s
        self._clock = clock

    def shards(self) -> list[ShardHealth]:
        """Every held shard, sorted by shard id."""
        held, _ = self.leases.held()
        calls = self.calls()
        now = self._clock()
        result = []
        for shard, since in sorted(held.items()):
            seen = calls.get(shard)
            # No processor (live ones only: a finished or killed one's gauges are dropped)
            # since the lease was first seen held counts from then.
            last = seen.last_activity if seen else since
            in_call = seen.in_call if seen else False
            age = max(0.0, now - last)
            result.append(ShardHealth(shard, age, in_call, age > self.stall_after_s))
        return result

    def problems(self) -> list[str]:
        """Why this worker is unhealthy (empty when it is not)."""
        _, read_at = self.leases.held()
        found = [s.describe() for s in self.shards() if s.stalled]
        if read_at is not None and self._clock() - read_at > self.stall_after_s:
            found.append(f"lease table not read for {self._clock() - read_at:.0f}s")
        return found

    def collect(self) -> Iterator[Metric]:
        """Per held shard: activity age and stalled (0/1); the number of leases held."""
        age = GaugeMetricFamily(
            "ddbcdc_worker_shard_last_activity_age_seconds",
            "Seconds since the processor of a shard this worker holds was last active.",
            labels=["shard"],
        )
        stalled = GaugeMetricFamily(
            "ddbcdc_worker_shard_stalled",
            "1 when the processor of a shard this worker holds has not been active for too long.",
            labels=["shard"],
        )
        shards = self.shards()
        for shard in shards:
            age.add_metric([shard.shard_id], shard.age_s)
            stalled.add_metric([shard.shard_id], 1.0 if shard.stalled else 0.0)
        held = GaugeMetricFamily(
            "ddbcdc_worker_leases_held", "Leases this worker holds (KCL lease table)."
        )
        held.add_metric([], float(len(shards)))
        yield from (age, stalled, held)
