"""Prometheus metrics of the worker, gathered across every shard processor process.

The KCL MultiLangDaemon runs one Python process per shard it holds, so the metrics use
prometheus_client's multiprocess mode: ``ddbcdc worker`` points ``PROMETHEUS_MULTIPROC_DIR``
at a fresh directory before it starts the daemon, every shard processor (a grandchild that
inherits the environment) writes its values there, and ``ddbcdc worker`` serves the merged view
on ``/metrics`` next to a ``/healthz`` probe.

A processor killed outright never marks itself dead, so the server drops the live gauges of
processes that no longer exist before each read (:func:`prune_dead_processes`). A processor
that is starting creates its files empty and sizes them a moment later; a read in between
skips such a file (:func:`merged_samples`) instead of failing the probe. The last
activity of a shard's processor is not a live gauge: it outlives the process, so a shard
whose processor has just ended is not mistaken for one that never had one.

Freshness is measured per change, after its batch has committed: commit time minus the
change's ApproximateCreationDateTime (when DynamoDB made it: write-to-commit) and minus its
record's ApproximateArrivalTimestamp (when it arrived in the stream: arrival-to-commit), so a
slow source shows apart from a slow consumer. A batch is observed in one pass
(:func:`observe_many`): thousands of ``observe`` calls per batch would cost more than the
batch's own bookkeeping.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from ddbcdc.errors import ConfigurationError
from ddbcdc.worker.liveness import ProcessorCalls

__all__ = [
    "FRESHNESS_BUCKETS",
    "MULTIPROC_ENV",
    "MetricsServer",
    "ProcessorMetrics",
    "mark_process_dead",
    "merged_samples",
    "observe_many",
    "processor_calls",
    "prune_dead_processes",
]

log = logging.getLogger(__name__)

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


_LIVE_FILE = re.compile(r"^gauge_live\w*_(\d+)\.db$")


def prune_dead_processes(multiproc_dir: Path) -> list[int]:
    """Drop the live gauges of processes that have gone without saying so; their PIDs."""
    dead = set()
    for path in multiproc_dir.glob("gauge_live*.db"):
        match = _LIVE_FILE.match(path.name)
        if match and not _pid_exists(int(match.group(1))):
            dead.add(int(match.group(1)))
    for pid in sorted(dead):
        multiprocess.mark_process_dead(pid, str(multiproc_dir))  # type: ignore[no-untyped-call]
    return sorted(dead)


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# A file's first 8 bytes hold how much of it is used; a file shorter than that is one a
# process has just created and not yet sized.
_HEADER_BYTES = 8


def merged_samples(multiproc_dir: Path) -> list[Metric]:
    """Every process's values in ``multiproc_dir``, merged; files still being created skipped.

    Processes that have gone without saying so are pruned first.
    """
    prune_dead_processes(multiproc_dir)
    files = []
    for path in sorted(multiproc_dir.glob("*.db")):
        try:
            if path.stat().st_size < _HEADER_BYTES:
                continue
        except FileNotFoundError:  # a dead process's live gauge, removed since the glob
            continue
        files.append(str(path))
    return list(multiprocess.MultiProcessCollector.merge(files, accumulate=True))  # type: ignore[no-untyped-call]


class _Merged(Collector):
    def __init__(self, multiproc_dir: Path) -> None:
        self.multiproc_dir = multiproc_dir

    def collect(self) -> Iterator[Metric]:
        yield from merged_samples(self.multiproc_dir)


def processor_calls(multiproc_dir: Path) -> Mapping[str, ProcessorCalls]:
    """Per shard: the processors' last activity and whether one is in a call now."""
    last: dict[str, float] = {}
    busy: dict[str, bool] = {}
    for metric in merged_samples(multiproc_dir):
        for sample in metric.samples:
            shard = sample.labels.get("shard")
            if shard is None:
                continue
            if sample.name == "ddbcdc_worker_last_activity_timestamp_seconds":
                last[shard] = sample.value
            elif sample.name == "ddbcdc_worker_in_call":
                busy[shard] = sample.value > 0
    return {shard: ProcessorCalls(at, busy.get(shard, False)) for shard, at in last.items()}


class MetricsServer:
    """``/metrics`` (merged from the multiprocess directory) and ``/healthz`` on one port.

    Args:
        multiproc_dir: the directory the shard processors write their values to.
        host: address to bind (loopback unless told otherwise).
        port: TCP port; 0 picks a free one (see :attr:`port` after :meth:`start`).
        problems: called on every ``/healthz``: what is wrong (empty: 200 "ok", else 503
            with one line per problem).
        collectors: more collectors served on ``/metrics`` (e.g. the stall monitor).
    """

    def __init__(
        self,
        *,
        multiproc_dir: Path,
        host: str,
        port: int,
        problems: Callable[[], Sequence[str]],
        collectors: Sequence[Collector] = (),
    ) -> None:
        self.multiproc_dir = multiproc_dir
        self.problems = problems
        self.collectors = tuple(collectors)
        try:
            self._server = ThreadingHTTPServer((host, port), self._handler_class())
        except OSError as exc:
            raise ConfigurationError(
                f"cannot serve metrics on {host}:{port} ({exc.strerror}): "
                "pick another --metrics-port (0: any free port)"
            ) from exc
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="ddbcdc-metrics", daemon=True
        )

    @property
    def port(self) -> int:
        """The bound TCP port."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Serve in a daemon thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving (if started) and close the socket."""
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def render(self) -> bytes:
        """The Prometheus text exposition of every processor's metrics."""
        registry = CollectorRegistry()
        registry.register(_Merged(self.multiproc_dir))
        for collector in self.collectors:
            registry.register(collector)
        return generate_latest(registry)

    def health(self) -> tuple[int, bytes]:
        """``/healthz``: (200, "ok") or (503, one line per problem)."""
        try:
            found = list(self.problems())
        except Exception as exc:  # a probe must answer, whatever broke
            log.exception("health check failed")
            found = [f"health check failed: {type(exc).__name__}"]
        if not found:
            return 200, b"ok\n"
        return 503, "".join(f"{line}\n" for line in found).encode()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._reply(200, CONTENT_TYPE_LATEST, owner.render())
                elif path == "/healthz":
                    status, body = owner.health()
                    self._reply(status, "text/plain", body)
                else:
                    self._reply(404, "text/plain", b"not found\n")

            def _reply(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("metrics http: " + format, *args)

        return Handler
