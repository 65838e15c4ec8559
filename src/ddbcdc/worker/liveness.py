"""Stalled shards: a lease this worker holds whose processor is no longer called.

The KCL calls every shard processor at least once per ``idleTimeBetweenReadsInMillis``, empty
batches included (``callProcessRecordsEvenForEmptyRecordList``), so a processor that has not
been called for a while means nothing reads that shard, whatever its last MillisBehindLatest
said. Three views of it:

* the shard processors record their last activity and whether they are inside a call, in two
  gauges (:class:`~ddbcdc.worker.metrics.ProcessorMetrics`). Activity is a call, a wait
  between retries, and, while a call runs, a heartbeat every second (a call may take minutes:
  isolating poison, retrying PostgreSQL); a processor frozen or killed stops beating. The
  last activity outlives the process: a processor that ended (shard end, lease lost, handed
  over) leaves the time it ended, not nothing;
* ``ddbcdc worker`` reads the KCL lease table for the leases it holds (:class:`LeaseWatcher`)
  and joins both in :class:`StallMonitor`. Per held shard: **waiting** while a parent shard
  is still being read (the KCL starts no processor for it yet), **busy** inside a call,
  **stalled** when nothing was active for longer than the threshold since the lease was
  first seen held and ready, **ok** otherwise. ``/healthz`` fails and
  ``ddbcdc_worker_shard_stalled`` turns 1 for a stalled shard only. A shard whose processor
  ended is no longer held at the next read of the lease table (a few seconds), and its last
  activity is recent until then;
* each processor touches its ``ddbcdc_shard_progress`` row on empty batches
  (:class:`ProgressTouch`), so ``ddbcdc status`` tells a stalled shard from an idle one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "HeldLease",
    "Lease",
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
    (and MillisBehindLatest, when known) in its own small statement
    (:func:`ddbcdc.materialize.progress.touch`: caught up, the shard's stream time moves to
    the present). A failure is logged and never raised: the touch is a liveness signal, not
    part of applying records.

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
        self.engine = engine
        self.application = application
        self.every_s = every_s
        self._clock = clock
        self._last: float | None = None
        self._failing = False

    def __call__(self, shard_id: str, millis_behind_latest: int | None) -> bool:
        """Touch the row if the last touch is old enough; whether a row was touched."""
        from ddbcdc.materialize.progress import touch

        now = self._clock()
        if self._last is not None and now - self._last < self.every_s:
            return False
        self._last = now
        try:
            with self.engine.begin() as conn:
                touch(conn, self.application, shard_id, millis_behind_latest)
        except sa.exc.SQLAlchemyError as exc:
            if not self._failing:
                log.warning("progress touch failed shard=%s error=%s", shard_id, type(exc).__name__)
            self._failing = True
            return False
        self._failing = False
        return True


@dataclass(frozen=True, slots=True)
class ProcessorCalls:
    """What the shard processors' gauges say about one shard."""

    last_activity: float
    in_call: bool


@dataclass(frozen=True, slots=True)
class Lease:
    """One row of the KCL lease table, as far as liveness and the shard list need it."""

    shard_id: str
    owner: str | None
    checkpoint: str | None
    parents: tuple[str, ...]

    @property
    def ended(self) -> bool:
        """The shard was read to its end (checkpointed at SHARD_END)."""
        return self.checkpoint == SHARD_END

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> Lease:
        """A lease from a lease-table item (DynamoDB JSON)."""
        return cls(
            shard_id=item["leaseKey"]["S"],
            owner=item.get("leaseOwner", {}).get("S"),
            checkpoint=item.get("checkpoint", {}).get("S"),
            parents=tuple(sorted(item.get("parentShardId", {}).get("SS", ()))),
        )


@dataclass(frozen=True, slots=True)
class HeldLease:
    """A lease this worker holds.

    Attributes:
        since: wall-clock time it was first seen held with no parent left to read (the time
            it was first seen held, while ``waiting``).
        waiting: a parent shard of it is still being read, so the KCL starts no processor.
    """

    since: float
    waiting: bool


State = Literal["ok", "busy", "waiting", "stalled"]


@dataclass(frozen=True, slots=True)
class ShardHealth:
    """One held shard as the stall monitor sees it.

    Attributes:
        shard_id: the shard.
        age_s: seconds since its processor's last activity, or since the lease was first
            seen held and ready if that is later.
        state: ``ok``, ``busy`` (inside a call), ``waiting`` (on a parent shard) or
            ``stalled`` (held, ready, and no activity for longer than the threshold).
    """

    shard_id: str
    age_s: float
    state: State

    @property
    def stalled(self) -> bool:
        """Whether the shard is stalled."""
        return self.state == "stalled"

    def describe(self) -> str:
        """One ``key=value`` line for ``/healthz``."""
        return f"shard={self.shard_id} state={self.state} last_activity_age_s={self.age_s:.1f}"


class LeaseWatcher:
    """The KCL lease table, read every ``every_s``: every lease, and those this worker holds.

    A lease is held when its ``leaseOwner`` is this worker and the shard has not ended. The
    view is kept as of the last successful read, with the time each held lease was first
    seen held and ready.

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
        self._leases: dict[str, Lease] = {}
        self._held: dict[str, HeldLease] = {}
        self._read_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ddbcdc-leases", daemon=True)

    def refresh(self) -> None:
        """Read the lease table once; on failure keep the previous view."""
        try:
            leases = {lease.shard_id: lease for lease in map(Lease.from_item, self.scan())}
        except Exception as exc:  # the lease table may be briefly unreachable
            log.warning("lease table not readable: %s", type(exc).__name__)
            return
        now = self._clock()
        held = {}
        with self._lock:
            for shard, lease in leases.items():
                if lease.owner != self.worker_id or lease.ended:
                    continue
                # The KCL's own rule: a parent blocks its child until it has ended (a
                # parent without a lease is gone, so done).
                waiting = any(p in leases and not leases[p].ended for p in lease.parents)
                before = self._held.get(shard)
                keep = before is not None and not before.waiting
                held[shard] = HeldLease(before.since if keep and before else now, waiting)
            self._leases, self._held, self._read_at = leases, held, now

    def held(self) -> tuple[dict[str, HeldLease], float | None]:
        """(shard -> its held lease, wall-clock time of the last successful read)."""
        with self._lock:
            return dict(self._held), self._read_at

    def leases(self) -> dict[str, Lease] | None:
        """Every lease as of the last successful read (None: never read)."""
        with self._lock:
            return None if self._read_at is None else dict(self._leases)

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
        calls: reads the processors' gauges: shard -> :class:`ProcessorCalls` (processors
            that ended included: their last activity stays).
        stall_after_s: a held, ready shard with no activity for longer than this is stalled.
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
        return [
            self._health(shard, lease, calls.get(shard), now)
            for shard, lease in sorted(held.items())
        ]

    def _health(
        self, shard: str, lease: HeldLease, seen: ProcessorCalls | None, now: float
    ) -> ShardHealth:
        # Activity before the lease was (last) taken says nothing about this tenure.
        last = max(lease.since, seen.last_activity) if seen else lease.since
        age = max(0.0, now - last)
        state: State
        if lease.waiting:
            state = "waiting"
        elif age > self.stall_after_s:
            state = "stalled"
        elif seen is not None and seen.in_call:
            state = "busy"
        else:
            state = "ok"
        return ShardHealth(shard, age, state)

    def problems(self) -> list[str]:
        """Why this worker is unhealthy (empty when it is not)."""
        _, read_at = self.leases.held()
        found = [s.describe() for s in self.shards() if s.stalled]
        if read_at is not None and self._clock() - read_at > self.stall_after_s:
            found.append(f"lease table not read for {self._clock() - read_at:.0f}s")
        return found

    def collect(self) -> Iterator[Metric]:
        """Per held shard: activity age, stalled (0/1) and busy (0/1); leases held."""
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
        busy = GaugeMetricFamily(
            "ddbcdc_worker_shard_busy",
            "1 while the processor of a shard this worker holds is inside a call.",
            labels=["shard"],
        )
        waiting = GaugeMetricFamily(
            "ddbcdc_worker_shard_waiting",
            "1 while a shard this worker holds waits for its parent shard to be read.",
            labels=["shard"],
        )
        shards = self.shards()
        for shard in shards:
            age.add_metric([shard.shard_id], shard.age_s)
            stalled.add_metric([shard.shard_id], 1.0 if shard.stalled else 0.0)
            busy.add_metric([shard.shard_id], 1.0 if shard.state == "busy" else 0.0)
            waiting.add_metric([shard.shard_id], 1.0 if shard.state == "waiting" else 0.0)
        held = GaugeMetricFamily(
            "ddbcdc_worker_leases_held", "Leases this worker holds (KCL lease table)."
        )
        held.add_metric([], float(len(shards)))
        yield from (age, stalled, busy, waiting, held)
