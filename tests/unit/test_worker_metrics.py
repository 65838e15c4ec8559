"""Worker metrics: values written by separate shard processor processes, served merged."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from ddbcdc.errors import ConfigurationError
from ddbcdc.worker.liveness import ProcessorCalls
from ddbcdc.worker.metrics import ProcessorMetrics, observe_many
from ddbcdc.worker.serving import MetricsServer, processor_calls, prune_dead_processes

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
    if die == "stay":
        import time
        print("ready", flush=True)
        time.sleep(60)
    """
)


def run_processor(tmp_path: Path, *args: str) -> Any:
    """Run a fake processor; one that stays is returned once its values are written."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    argv = [sys.executable, "-c", PROCESSOR, *args]
    if args[-1] != "stay":
        return subprocess.run(argv, env=env, check=True, timeout=60)
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline() == "ready\n"
    return process


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def sample(body: str, prefix: str) -> float:
    [line] = [x for x in body.splitlines() if x.startswith(prefix)]
    return float(line.rsplit(" ", 1)[1])


def test_metrics_of_every_processor_process_are_merged(tmp_path: Path) -> None:
    run_processor(tmp_path, "shardId-0", "300", "1500", "gone")  # ended without a word
    alive = run_processor(tmp_path, "shardId-0", "200", "20", "stay")  # the shard's next one
    run_processor(tmp_path, "shardId-1", "50", "7", "dead")
    problems: list[str] = []
    server = MetricsServer(
        multiproc_dir=tmp_path, host="127.0.0.1", port=0, problems=lambda: problems
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
        # a finished processor's lag is dropped (whether it said so or not), its counters stay
        assert 'ddbcdc_worker_millis_behind_latest{shard="shardId-1"}' not in body
        assert get(server.port, "/healthz") == (200, "ok\n")
        problems[:] = ["shard=shardId-0 state=stalled last_activity_age_s=75.0", "daemon down"]
        assert get(server.port, "/healthz") == (
            503,
            "shard=shardId-0 state=stalled last_activity_age_s=75.0\ndaemon down\n",
        )
        assert get(server.port, "/nope")[0] == 404
    finally:
        server.stop()
        alive.kill()
        alive.communicate(timeout=30)


def test_a_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    first = MetricsServer(multiproc_dir=tmp_path, host="127.0.0.1", port=0, problems=list)
    try:
        with pytest.raises(ConfigurationError, match="--metrics-port"):
            MetricsServer(multiproc_dir=tmp_path, host="127.0.0.1", port=first.port, problems=list)
    finally:
        first.stop()


CALLED = textwrap.dedent(
    """
    import os, sys, time
    from ddbcdc.worker.metrics import ProcessorMetrics
    shard, at, busy = sys.argv[1], float(sys.argv[2]), sys.argv[3] == "busy"
    m = ProcessorMetrics.create()
    m.last_activity.labels(shard).set(at)
    m.in_call.labels(shard).set(1 if busy else 0)
    print(os.getpid(), flush=True)
    if sys.argv[4] == "stay":
        time.sleep(60)
    """
)


def test_calls_of_killed_processors_are_dropped_and_live_ones_merged(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}

    def start(*args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", CALLED, *args], env=env, stdout=subprocess.PIPE, text=True
        )

    # shard 0: a processor killed in the middle of a batch, then its successor, alive.
    killed = start("shardId-0", "1000", "busy", "exit")
    killed.communicate(timeout=60)
    assert killed.returncode == 0  # ended without marking itself dead, as SIGKILL does
    alive = start("shardId-0", "2000", "idle", "stay")
    other = start("shardId-1", "1500", "busy", "stay")
    try:
        for process in (alive, other):
            assert process.stdout is not None
            process.stdout.readline()  # its values are written
        calls = processor_calls(tmp_path)
        assert calls == {
            "shardId-0": ProcessorCalls(last_activity=2000.0, in_call=False),
            "shardId-1": ProcessorCalls(last_activity=1500.0, in_call=True),
        }
        assert prune_dead_processes(tmp_path) == []  # already pruned by the read
        assert not list(tmp_path.glob(f"gauge_live*_{killed.pid}.db"))
    finally:
        for process in (alive, other):
            process.kill()
            process.communicate(timeout=30)


@pytest.mark.parametrize(
    "values", [[], [0.0], [0.05, 0.0500001, 1.0, 1.2, 7.0, 86_400.0, 10**9, -3.0], [0.3] * 1000]
)
def test_observing_a_batch_at_once_equals_observing_each_value(values: list[float]) -> None:
    one, each = CollectorRegistry(), CollectorRegistry()
    many = ProcessorMetrics.create(one).arrival_to_commit.labels("customers")
    single = ProcessorMetrics.create(each).arrival_to_commit.labels("customers")
    observe_many(many, values)
    for value in values:
        single.observe(max(value, 0.0))

    def samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
        return {
            (s.name, s.labels.get("le", "")): s.value
            for m in registry.collect()
            if m.name == "ddbcdc_worker_arrival_to_commit_seconds"
            for s in m.samples
            if not s.name.endswith("_created")
        }

    got, want = samples(one), samples(each)
    total = ("ddbcdc_worker_arrival_to_commit_seconds_sum", "")
    assert got.pop(total) == pytest.approx(want.pop(total), rel=1e-12)  # summed exactly
    assert got == want
    assert got[("ddbcdc_worker_arrival_to_commit_seconds_count", "")] == len(values)


def test_a_processor_that_is_creating_its_files_fails_no_read(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    written = subprocess.run(
        [sys.executable, "-c", CALLED, "shardId-0", "2000", "idle", "exit"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert written.stdout.strip()
    # A processor starting now: its files opened, not yet sized (named after a live process).
    starting = os.getpid()
    for name in (f"gauge_livemostrecent_{starting}.db", f"counter_{starting}.db"):
        (tmp_path / name).touch()
    assert processor_calls(tmp_path) == {
        "shardId-0": ProcessorCalls(last_activity=2000.0, in_call=False)
    }

    def problems() -> list[str]:
        return [shard for shard, calls in processor_calls(tmp_path).items() if calls.in_call]

    server = MetricsServer(multiproc_dir=tmp_path, host="127.0.0.1", port=0, problems=problems)
    try:
        assert server.health() == (200, b"ok\n")
        assert b'ddbcdc_worker_last_activity_timestamp_seconds{shard="shardId-0"} 2000.0' in (
            server.render()
        )
    finally:
        server.stop()
