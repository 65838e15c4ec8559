"""Worker metrics: values written by separate shard processor processes, served merged."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ddbcdc.errors import ConfigurationError
from ddbcdc.worker.metrics import MetricsServer

PROCESSOR = textwrap.dedent(
    """
    import sys
    from ddbcdc.worker.metrics import ProcessorMetrics, mark_process_dead
    shard, records, behind, die = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    m = ProcessorMetrics.create()
    m.records.labels(shard).inc(records)
    m.batches.labels(shard).inc()
    m.apply_seconds.labels(shard).observe(0.02)
    m.millis_behind_latest.labels(shard).set(behind)
    if die == "dead":
        import os
        mark_process_dead(os.getpid())
    """
)


def run_processor(tmp_path: Path, *args: str) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", PROCESSOR, *args], env=env, check=True, timeout=60)


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def sample(body: str, prefix: str) -> float:
    [line] = [x for x in body.splitlines() if x.startswith(prefix)]
    return float(line.rsplit(" ", 1)[1])


def test_metrics_of_every_processor_process_are_merged(tmp_path: Path) -> None:
    run_processor(tmp_path, "shardId-0", "300", "1500", "alive")
    run_processor(tmp_path, "shardId-0", "200", "20", "alive")  # the shard's next processor
    run_processor(tmp_path, "shardId-1", "50", "7", "dead")
    healthy = [True]
    server = MetricsServer(
        multiproc_dir=tmp_path, host="127.0.0.1", port=0, healthy=lambda: healthy[0]
    )
    server.start()
    try:
        status, body = get(server.port, "/metrics")
        assert status == 200
        assert sample(body, 'ddbcdc_worker_records_total{shard="shardId-0"}') == 500
        assert sample(body, 'ddbcdc_worker_records_total{shard="shardId-1"}') == 50
        assert sample(body, 'ddbcdc_worker_batches_total{shard="shardId-0"}') == 2
        assert sample(body, 'ddbcdc_worker_apply_seconds_count{shard="shardId-0"}') == 2
        assert sample(body, 'ddbcdc_worker_millis_behind_latest{shard="shardId-0"}') == 20
        # a finished processor's lag is dropped, its counters stay
        assert 'ddbcdc_worker_millis_behind_latest{shard="shardId-1"}' not in body
        assert get(server.port, "/healthz") == (200, "ok\n")
        healthy[0] = False
        assert get(server.port, "/healthz")[0] == 503
        assert get(server.port, "/nope")[0] == 404
    finally:
        server.stop()


def test_a_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    first = MetricsServer(multiproc_dir=tmp_path, host="127.0.0.1", port=0, healthy=lambda: True)
    try:
        with pytest.raises(ConfigurationError, match="--metrics-port"):
            MetricsServer(
                multiproc_dir=tmp_path, host="127.0.0.1", port=first.port, healthy=lambda: True
            )
    finally:
        first.stop()
