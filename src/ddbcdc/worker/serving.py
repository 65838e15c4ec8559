"""The worker's view of every shard processor's metrics: ``/metrics`` and ``/healthz``.

The processors write their values to the multiprocess directory (:mod:`ddbcdc.worker.metrics`);
``ddbcdc worker`` reads them merged, here. A processor killed outright never marks itself
dead, so the live gauges of processes that no longer exist are dropped before each read
(:func:`prune_dead_processes`). A processor that is starting creates its files empty and
sizes them a moment later; a read in between skips such a file (:func:`merged_samples`)
instead of failing the probe.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from ddbcdc.children import pid_exists
from ddbcdc.errors import ConfigurationError
from ddbcdc.worker.liveness import ProcessorCalls

__all__ = ["MetricsServer", "merged_samples", "processor_calls", "prune_dead_processes"]

log = logging.getLogger(__name__)

_LIVE_FILE = re.compile(r"^gauge_live\w*_(\d+)\.db$")


def prune_dead_processes(multiproc_dir: Path) -> list[int]:
    """Drop the live gauges of processes that have gone without saying so; their PIDs."""
    dead = set()
    for path in multiproc_dir.glob("gauge_live*.db"):
        match = _LIVE_FILE.match(path.name)
        if match and not pid_exists(int(match.group(1))):
            dead.add(int(match.group(1)))
    for pid in sorted(dead):
        multiprocess.mark_process_dead(pid, str(multiproc_dir))  # type: ignore[no-untyped-call]
    return sorted(dead)


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
