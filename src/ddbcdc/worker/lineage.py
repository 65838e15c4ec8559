"""A check, while the worker runs, of what same-second versions rely on in a DynamoDB stream.

DynamoDB Streams stamps changes in whole seconds, so two changes of an item in one second
are ordered by their sequence numbers, also when a shard rollover falls between them: the
version rule (docs/correctness.md) then needs each child shard's sequence numbers to start
above where its parent's ended. DynamoDB's own examples show it so; AWS does not state it.
The worker describes the stream every ``every_s`` and reports each parent/child pair that
breaks it: an error in the log (once per pair) and ``ddbcdc_worker_lineage_disorder`` on
``/metrics``. The copy may then be wrong for an item changed twice in one second across
that rollover; ``ddbcdc verify --repair`` finds and fixes it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ddbcdc.aws.streams import ShardInfo, lineage_disorder

__all__ = ["LineageWatch"]

log = logging.getLogger(__name__)


class LineageWatch(Collector):
    """Describes the stream every ``every_s`` and counts the pairs out of order.

    Args:
        shards: the stream's shards (:meth:`ddbcdc.aws.streams.Stream.shards`).
        every_s: seconds between looks (DescribeStream allows 10 calls a second per stream).
    """

    def __init__(self, shards: Callable[[], list[ShardInfo]], *, every_s: float = 300.0) -> None:
        self.shards = shards
        self.every_s = every_s
        self._reported: set[tuple[str, str]] = set()
        self._count = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ddbcdc-lineage", daemon=True)

    def check(self) -> int:
        """Look once; the number of pairs out of order (the previous one on a failure)."""
        try:
            wrong = lineage_disorder(self.shards())
        except Exception as exc:  # the stream may be briefly unreachable: look again later
            log.warning("stream not described: %s", type(exc).__name__)
            return self._count
        for parent, child in wrong:
            if (parent.shard_id, child.shard_id) not in self._reported:
                self._reported.add((parent.shard_id, child.shard_id))
                log.error(
                    "shard %s starts at sequence %s, at or below where its parent %s ended (%s): "
                    "changes of an item in one second across them may be applied in the wrong "
                    "order; run `ddbcdc verify --repair`",
                    child.shard_id,
                    child.starting_sequence,
                    parent.shard_id,
                    parent.ending_sequence,
                )
        with self._lock:
            self._count = len(wrong)
        return self._count

    def start(self) -> None:
        """Look now, then every ``every_s`` in a daemon thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop looking."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.check()
            self._stop.wait(self.every_s)

    def collect(self) -> Iterator[Metric]:
        """``ddbcdc_worker_lineage_disorder``: parent/child pairs whose numbers do not grow."""
        gauge = GaugeMetricFamily(
            "ddbcdc_worker_lineage_disorder",
            "Parent/child shard pairs whose sequence numbers do not grow from parent to child.",
        )
        with self._lock:
            gauge.add_metric([], float(self._count))
        yield gauge
