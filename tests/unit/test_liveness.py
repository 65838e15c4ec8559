"""Stall detection: held leases joined with the processors' last calls, on a fake clock."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from ddbcdc.worker.liveness import LeaseWatcher, ProcessorCalls, StallMonitor


def lease(shard: str, owner: str, checkpoint: str = "49600", **extra: str) -> dict[str, Any]:
    item = {"leaseKey": {"S": shard}, "leaseOwner": {"S": owner}, "checkpoint": {"S": checkpoint}}
    item.update({name: {"S": value} for name, value in extra.items()})
    return item


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def monitor(
    items: list[dict[str, Any]], calls: dict[str, ProcessorCalls], clock: Clock
) -> tuple[LeaseWatcher, StallMonitor]:
    def scan() -> list[dict[str, Any]]:
        if isinstance(items[0], Exception):
            raise items[0]
        return items

    watcher = LeaseWatcher(scan, "a", clock=clock)
    return watcher, StallMonitor(watcher, lambda: calls, stall_after_s=30, clock=clock)


def test_only_leases_this_worker_owns_and_that_have_not_ended_are_held() -> None:
    clock = Clock()
    items = [
        lease("s-0", "a"),
        lease("s-1", "b"),
        lease("s-2", "a", checkpoint="SHARD_END"),
        # a handoff left half done still names this worker as the owner: it must read it
        lease("s-3", "a", checkpointOwner="b"),
    ]
    watcher, _ = monitor(items, {}, clock)
    watcher.refresh()
    assert watcher.held() == ({"s-0": 1000.0, "s-3": 1000.0}, 1000.0)


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


def test_a_batch_being_retried_is_busy_and_a_hung_call_is_stalled() -> None:
    clock = Clock(2_000.0)
    # s-0 waits between retries of a batch (PostgreSQL down): each wait is activity;
    # s-1 entered a call 40 s ago and shows nothing since
    calls = {
        "s-0": ProcessorCalls(last_activity=1_999.0, in_call=True),
        "s-1": ProcessorCalls(last_activity=1_960.0, in_call=True),
    }
    watcher, stalls = monitor([lease("s-0", "a"), lease("s-1", "a")], calls, clock)
    watcher.refresh()
    busy, hung = stalls.shards()
    assert busy.describe() == "shard=s-0 state=busy last_activity_age_s=1.0"
    assert not busy.stalled
    assert hung.stalled and hung.describe() == "shard=s-1 state=stalled last_activity_age_s=40.0"


def test_an_unreadable_lease_table_keeps_the_last_view() -> None:
    clock = Clock()
    items: list[Any] = [lease("s-0", "a")]
    watcher, _stalls = monitor(items, {}, clock)
    watcher.refresh()
    items[0] = ConnectionError("down")
    clock.now = 1_010.0
    watcher.refresh()
    assert watcher.held() == ({"s-0": 1000.0}, 1000.0)


def test_gauges_per_held_shard() -> None:
    clock = Clock()
    calls = {"s-0": ProcessorCalls(last_activity=900.0, in_call=False)}
    watcher, stalls = monitor([lease("s-0", "a")], calls, clock)
    watcher.refresh()
    clock.now = 1_045.0
    registry = CollectorRegistry()
    registry.register(stalls)
    body = generate_latest(registry).decode()
    assert 'ddbcdc_worker_shard_stalled{shard="s-0"} 1.0' in body
    assert 'ddbcdc_worker_shard_last_activity_age_seconds{shard="s-0"} 145.0' in body
    assert "ddbcdc_worker_leases_held 1.0" in body
