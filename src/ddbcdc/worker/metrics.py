"""Prometheus metrics of the worker, gathered across every shard processor process.

The KCL MultiLangDaemon runs one Python process per shard it holds, so the metrics use
prometheus_client's multiprocess mode: ``ddbcdc worker`` points ``PROMETHEUS_MULTIPROC_DIR``
at a fresh directory before it starts the daemon, every shard processor (a grandchild that
inherits the environment) writes its values there, and ``ddbcdc worker`` serves the merged view
on ``/metrics`` next to a ``/healthz`` probe (:mod:`ddbcdc.worker.serving`). This module is
what a processor writes. The last activity of a shard's processor is not a live gauge: it
outlives the process, so a shard whose processor has just ended is not mistaken for one that
never had one.

Freshness is measured per change, after its batch has committed: commit time minus the
change's ApproximateCreationDateTime (when DynamoDB made it: write-to-commit) and minus its
record's ApproximateArrivalTimestamp (when it arrived in the stream: arrival-to-commit), so a
slow source shows apart from a slow consumer. A batch is observed in one pass
(:func:`observe_many`): thousands of ``observe`` calls per batch would cost more than the
batch's own bookkeeping.
"""

from __future__ import annotations

import bisect
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess

__all__ = [
    "FRESHNESS_BUCKETS",
    "MULTIPROC_ENV",
    "ProcessorMetrics",
    "mark_process_dead",
    "observe_many",
]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Batches of up to 10,000 records against a local PostgreSQL: milliseconds to seconds.
_APPLY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Freshness: sub-second when caught up, up to days while a worker catches up.
FRESHNESS_BUCKETS = (
    0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
    3600.0, 21600.0, 86400.0,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ProcessorMetrics:
    """The metrics one shard processor updates; every series is labelled by shard."""

    records: Counter
    batches: Counter
    dead_letters: Counter
    dead_letter_reasons: Counter
    unmatched: Counter
    apply_seconds: Histogram
    millis_behind_latest: Gauge
    apply_retries: Counter
    checkpoint_retries: Counter
    checkpoint_failures: Counter
    last_activity: Gauge
    in_call: Gauge
    write_to_commit: Histogram
    arrival_to_commit: Histogram
    newest_change: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> ProcessorMetrics:
        """Build the metrics in ``registry`` (a private one when None).

        In multiprocess mode the registry only matters for tests: values go to the
        ``PROMETHEUS_MULTIPROC_DIR`` files whatever registry holds the metric objects.
        """
        reg = registry if registry is not None else CollectorRegistry()
        shard = ("shard",)
        return cls(
            records=Counter(
                "ddbcdc_worker_records",
                "Kinesis records applied to PostgreSQL (dead-lettered ones included).",
                shard,
                registry=reg,
            ),
            batches=Counter(
                "ddbcdc_worker_batches", "Batches committed to PostgreSQL.", shard, registry=reg
            ),
            dead_letters=Counter(
                "ddbcdc_worker_dead_letters",
                "Poison records written to the dead-letter table.",
                shard,
                registry=reg,
            ),
            dead_letter_reasons=Counter(
                "ddbcdc_worker_dead_letter_reasons",
                "Dead letters by target table, column and reason (type drift shows here: "
                "'S where numeric expected'); column '-' when no column refused a value.",
                ("table", "column", "reason"),
                registry=reg,
            ),
            unmatched=Counter(
                "ddbcdc_worker_unmatched",
                "Changes of items no route of a routed mapping takes (table: the mapping's "
                "name): kept whole in its catch-all table, or dead-lettered without one.",
                ("table",),
                registry=reg,
            ),
            apply_seconds=Histogram(
                "ddbcdc_worker_apply_seconds",
                "Time to decode, cleanse and commit one batch (successful attempt).",
                shard,
                buckets=_APPLY_BUCKETS,
                registry=reg,
            ),
            millis_behind_latest=Gauge(
                "ddbcdc_worker_millis_behind_latest",
                "MillisBehindLatest Kinesis reported with the shard's latest batch.",
                shard,
                multiprocess_mode="livemostrecent",
                registry=reg,
            ),
            apply_retries=Counter(
                "ddbcdc_worker_apply_retries",
                "Batch attempts that failed and will be retried (reason: statement_timeout, "
                "lock_timeout, database, unexpected).",
                ("shard", "reason"),
                registry=reg,
            ),
            checkpoint_retries=Counter(
                "ddbcdc_worker_checkpoint_retries",
                "Checkpoint attempts retried after a transient KCL error.",
                ("shard", "error"),
                registry=reg,
            ),
            checkpoint_failures=Counter(
                "ddbcdc_worker_checkpoint_failures",
                "Checkpoints given up (lease lost, invalid state, retries exhausted).",
                ("shard", "error"),
                registry=reg,
            ),
            last_activity=Gauge(
                "ddbcdc_worker_last_activity_timestamp_seconds",
                "When the shard's processor was last active: called (empty batches "
                "included), waiting to retry, or working inside a call (a heartbeat).",
                shard,
                multiprocess_mode="max",  # outlives the process (see the module doc)
                registry=reg,
            ),
            in_call=Gauge(
                "ddbcdc_worker_in_call",
                "1 while the shard's processor is inside a call (applying or retrying a batch).",
                shard,
                multiprocess_mode="livemax",
                registry=reg,
            ),
            write_to_commit=Histogram(
                "ddbcdc_worker_write_to_commit_seconds",
                "Per change: its batch's commit time minus its ApproximateCreationDateTime "
                "(the write in DynamoDB), by target table.",
                ("table",),
                buckets=FRESHNESS_BUCKETS,
                registry=reg,
            ),
            arrival_to_commit=Histogram(
                "ddbcdc_worker_arrival_to_commit_seconds",
                "Per change: its batch's commit time minus its record's "
                "ApproximateArrivalTimestamp (the arrival in the stream), by target table.",
                ("table",),
                buckets=FRESHNESS_BUCKETS,
                registry=reg,
            ),
            newest_change=Gauge(
                "ddbcdc_worker_newest_change_timestamp_seconds",
                "ApproximateCreationDateTime of the newest change committed, by target table.",
                ("table",),
                multiprocess_mode="max",
                registry=reg,
            ),
        )


def observe_many(histogram: Histogram, values: Sequence[float]) -> None:
    """``histogram.observe(v)`` for every value, in one pass (``histogram``: a child, with
    its labels). Negative values (clocks apart) count as 0."""
    if not values:
        return
    ordered = sorted(values)
    bounds: list[float] = histogram._upper_bounds
    below = 0
    for bucket, bound in zip(histogram._buckets, bounds, strict=True):
        upto = bisect.bisect_right(ordered, bound)  # observe(): the first bound >= value
        if upto > below:
            bucket.inc(upto - below)
        below = upto
    histogram._sum.inc(math.fsum(ordered[bisect.bisect_left(ordered, 0.0) :]))


def mark_process_dead(pid: int) -> None:
    """Drop the live gauges of a finished processor process (no-op outside multiprocess)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
