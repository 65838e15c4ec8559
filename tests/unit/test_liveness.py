"""Stall detection: held leases joined with the processors' activity, on a fake clock.

The lease rows are the KCL's own (DynamoDB JSON as KCL 3.1.3 writes them, see
``tests/fixtures/leases``); the processors' activity is either given or, where the rule is
about what outlives a process, written by real processor processes into a multiprocess
metrics folder.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from ddbcdc.pipeline import BatchResult, SourceRecord
from ddbcdc.worker.liveness import HeldLease, LeaseWatcher, ProcessorCalls, StallMonitor
from ddbcdc.worker.metrics import ProcessorMetrics
from ddbcdc.worker.processor import ShardProcessor
from ddbcdc.worker.serving import processor_calls
from multilang_fake import initialize, process

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "leases"


def kcl_leases() -> dict[str, dict[str, Any]]:
    """Lease rows of a stream resharded 2 -> 4, by shard (see the fixture's README)."""
    rows = json.loads((FIXTURES / "after-reshard.json").read_text())
    return {row["leaseKey"]["S"]: row for row in rows}


def lease(shard: str, owner: str, checkpoint: str = "49600", **extra: Any) -> dict[str, Any]:
    item = copy.deepcopy(kcl_leases()[PARENT])
    item.pop("childShardIds", None)
    item["leaseKey"] = {"S": shard}
    item["leaseOwner"] = {"S": owner}
    item["checkpoint"] = {"S": checkpoint}
    item.update(extra)
    return item


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def monitor(
    items: list[Any], calls: Any, clock: Clock, *, worker: str = "a", stall_after_s: float = 30
) -> tuple[LeaseWatcher, StallMonitor]:
    def scan() -> list[dict[str, Any]]:
        if items and isinstance(items[0], Exception):
            raise items[0]
        return list(items)

    reader = calls if callable(calls) else (lambda: calls)
    watcher = LeaseWatcher(scan, worker, clock=clock)
    return watcher, StallMonitor(watcher, reader, stall_after_s=stall_after_s, clock=clock)


PARENT = "shardId-000000000000"


def test_only_leases_this_worker_owns_and_that_have_not_ended_are_held() -> None:
    clock = Clock()
    items = [
        lease("s-0", "a"),
        lease("s-1", "b"),
        lease("s-2", "a", checkpoint="SHARD_END"),
        # a handoff left half done still names this worker as the owner: it must read it
        lease("s-3", "a", checkpointOwner={"S": "b"}),
    ]
    watcher, _ = monitor(items, {}, clock)
    watcher.refresh()
    ready = HeldLease(since=1000.0, waiting=False)
    assert watcher.held() == ({"s-0": ready, "s-3": ready}, 1000.0)


def test_a_held_shard_without_calls_past_the_threshold_is_stalled() -> None:
    clock = Clock()
    calls = {"s-0": ProcessorCalls(last_activity=995.0, in_call=False)}
    watcher, stalls = monitor([lease("s-0", "a"), lease("s-1", "a")], calls, clock)
    watcher.refresh()
    assert stalls.problems() == []  # s-1 has no processor yet, but its lease is new

    clock.now = 1_020.0
    calls["s-0"] = ProcessorCalls(last_activity=1_019.5, in_call=False)
    watcher.refresh()
    assert stalls.problems() == []

    clock.now = 1_031.0  # s-1: held 31 s and never called
    assert stalls.problems() == ["shard=s-1 state=stalled last_activity_age_s=31.0"]

    clock.now = 1_060.0
    calls["s-1"] = ProcessorCalls(last_activity=1_059.0, in_call=False)
    assert [s.shard_id for s in stalls.shards() if s.stalled] == ["s-0"]
    assert stalls.problems() == [
        "shard=s-0 state=stalled last_activity_age_s=40.5",
        "lease table not read for 40s",
    ]


def test_a_busy_call_is_busy_and_a_call_without_heartbeats_is_stalled() -> None:
    clock = Clock(2_000.0)
    # s-0: inside a long call that beats (a batch retried, poison isolated): busy;
    # s-1: entered a call 40 s ago and shows nothing since (frozen): stalled
    calls = {
        "s-0": ProcessorCalls(last_activity=1_999.0, in_call=True),
        "s-1": ProcessorCalls(last_activity=1_960.0, in_call=True),
    }
    watcher, stalls = monitor([lease("s-0", "a"), lease("s-1", "a")], calls, clock)
    clock.now = 1_900.0
    watcher.refresh()
    clock.now = 2_000.0
    busy, hung = stalls.shards()
    assert busy.describe() == "shard=s-0 state=busy last_activity_age_s=1.0"
    assert not busy.stalled
    assert hung.stalled and hung.describe() == "shard=s-1 state=stalled last_activity_age_s=40.0"


def test_a_child_waiting_for_its_parents_is_waiting_then_counted_from_when_they_end() -> None:
    """Real rows: after UpdateShardCount 2 -> 4, children wait for their parent to end."""
    rows = kcl_leases()
    child = next(s for s, row in rows.items() if "parentShardId" in row)
    parents = rows[child]["parentShardId"]["SS"]
    for shard, row in rows.items():  # this worker holds the child; the parents are b's
        row["leaseOwner"] = {"S": "a" if shard == child else "b"}
        if shard in parents:
            row["checkpoint"] = {"S": "49655"}  # still being read
    clock = Clock()
    items = list(rows.values())
    watcher, stalls = monitor(items, {}, clock, stall_after_s=20)
    watcher.refresh()
    clock.now = 1_200.0  # the parents take minutes: the child is not stalled meanwhile
    watcher.refresh()
    [health] = stalls.shards()
    assert (health.shard_id, health.state, health.stalled) == (child, "waiting", False)
    assert stalls.problems() == []

    for shard in parents:
        rows[shard]["checkpoint"] = {"S": "SHARD_END"}
    items[:] = list(rows.values())
    watcher.refresh()  # ready from now: the KCL starts its processor within seconds
    clock.now = 1_215.0
    assert stalls.problems() == []
    clock.now = 1_221.0
    watcher.refresh()
    assert stalls.problems() == [f"shard={child} state=stalled last_activity_age_s=21.0"]


def test_activity_before_the_lease_was_taken_does_not_count() -> None:
    clock = Clock(5_000.0)
    calls = {"s-0": ProcessorCalls(last_activity=1_000.0, in_call=False)}  # an hour ago
    watcher, stalls = monitor([lease("s-0", "a")], calls, clock)
    watcher.refresh()
    clock.now = 5_010.0
    assert stalls.problems() == []
    clock.now = 5_031.0
    watcher.refresh()
    assert stalls.problems() == ["shard=s-0 state=stalled last_activity_age_s=31.0"]


def test_an_unreadable_lease_table_keeps_the_last_view() -> None:
    clock = Clock()
    items: list[Any] = [lease("s-0", "a")]
    watcher, _stalls = monitor(items, {}, clock)
    watcher.refresh()
    items[0] = ConnectionError("down")
    clock.now = 1_010.0
    watcher.refresh()
    assert watcher.held() == ({"s-0": HeldLease(1000.0, False)}, 1000.0)


def test_gauges_per_held_shard() -> None:
    clock = Clock()
    calls = {
        "s-0": ProcessorCalls(last_activity=900.0, in_call=False),
        "s-1": ProcessorCalls(last_activity=1_044.0, in_call=True),
    }
    watcher, stalls = monitor([lease("s-0", "a"), lease("s-1", "a")], calls, clock)
    clock.now = 890.0
    watcher.refresh()
    clock.now = 1_045.0
    registry = CollectorRegistry()
    registry.register(stalls)
    body = generate_latest(registry).decode()
    assert 'ddbcdc_worker_shard_stalled{shard="s-0"} 1.0' in body
    assert 'ddbcdc_worker_shard_last_activity_age_seconds{shard="s-0"} 145.0' in body
    assert 'ddbcdc_worker_shard_busy{shard="s-1"} 1.0' in body
    assert 'ddbcdc_worker_shard_stalled{shard="s-1"} 0.0' in body
    assert "ddbcdc_worker_leases_held 2.0" in body


ENDED = textwrap.dedent(
    """
    import os, sys, time
    from ddbcdc.worker.metrics import ProcessorMetrics, mark_process_dead
    m = ProcessorMetrics.create()
    m.last_activity.labels(sys.argv[1]).set(float(sys.argv[2]))
    m.in_call.labels(sys.argv[1]).set(0)
    mark_process_dead(os.getpid())  # as the shard processor does when the daemon lets it go
    """
)


def test_a_processor_that_ended_leaves_its_last_activity_and_is_never_stalled(
    tmp_path: Path,
) -> None:
    """Shard end and lease lost: the processor exits, the lease view is seconds old."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    clock = Clock(10_000.0)
    # held since long ago (first seen at 1,000) by this worker, processor called all along,
    # then the shard ended (or the balancer moved the lease) at 9,999 and the processor exited
    for shard in ("s-ended", "s-moved"):
        subprocess.run([sys.executable, "-c", ENDED, shard, "9999"], env=env, check=True)
    watcher, stalls = monitor(
        [lease("s-ended", "a"), lease("s-moved", "a")],
        lambda: processor_calls(tmp_path),
        clock,
        stall_after_s=20,
    )
    clock.now = 1_000.0
    watcher.refresh()
    clock.now = 9_998.0  # the last read before the end: still held
    watcher.refresh()
    clock.now = 10_003.0  # the next read of the lease table is up to 5 s away
    assert stalls.problems() == []
    assert {s.shard_id: s.state for s in stalls.shards()} == {"s-ended": "ok", "s-moved": "ok"}


class SlowPipeline:
    """A batch that takes ``seconds`` (poison being isolated, say)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def process(self, records: list[SourceRecord], **_: Any) -> BatchResult:
        time.sleep(self.seconds)
        return BatchResult(received=len(records), upserted=len(records))

    def end_shard(self, application: str, shard_id: str) -> None:
        pass

    def check_mappings(self) -> None:
        pass


def test_a_processor_in_a_long_call_beats_and_is_busy_not_stalled() -> None:
    from amazon_kclpy import kcl

    from multilang_fake import Discard, FakeDaemon

    registry = CollectorRegistry()
    metrics = ProcessorMetrics.create(registry)
    shard = "shardId-000000000001"
    processor = ShardProcessor(
        SlowPipeline(1.5), application="app", metrics=metrics, heartbeat_s=0.05
    )
    daemon = FakeDaemon([initialize(shard), process(1, 2)])
    worker = threading.Thread(
        target=kcl.KCLProcess(
            processor, input_file=daemon, output_file=daemon, error_file=Discard()
        ).run
    )

    def calls() -> dict[str, ProcessorCalls]:
        at = registry.get_sample_value(
            "ddbcdc_worker_last_activity_timestamp_seconds", {"shard": shard}
        )
        busy = registry.get_sample_value("ddbcdc_worker_in_call", {"shard": shard})
        return {} if at is None else {shard: ProcessorCalls(at, bool(busy))}

    watcher, stalls = monitor([lease(shard, "a")], calls, Clock(), stall_after_s=0.5)
    watcher._clock = stalls._clock = time.time
    watcher.refresh()
    worker.start()
    seen = []
    while worker.is_alive():
        seen.extend(s.state for s in stalls.shards())
        time.sleep(0.05)
    worker.join()
    assert "busy" in seen
    assert "stalled" not in seen, seen
