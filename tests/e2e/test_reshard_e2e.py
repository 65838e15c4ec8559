"""Resharding under load: no false alarm, stream time never goes back, the copy stays exact.

Two ``ddbcdc worker``s consume a 2-shard stream while the loader writes at a steady rate; the
stream is resharded four ways in turn (UpdateShardCount 2 -> 4, MergeShards, SplitShard,
UpdateShardCount down to 2), each time waiting until the workers read every new shard. All
along, both workers' ``/healthz`` is polled (with a 20 s stall threshold): a shard whose
processor ended (its shard closed, its lease moved by the KCL's balancer) or that waits for its
parents is never reported stalled, so ``/healthz`` never answers 503, and ``ddbcdc status``
never exits 3 (an ended shard is ended, a child not read yet not started). The stream time is
sampled too: it never moves back. At the end PostgreSQL equals a Scan of the table.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cluster import ROOT, Customers, SteadyLoad, Worker, leases, query, wait_for

from ddbcdc.aws import clients as aws
from ddbcdc.materialize.streamtime import stream_times
from ddbcdc.verify.compare import Comparison, compare

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STALL_AFTER_S = 20
STEP_TIMEOUT_S = 90


class Watch(threading.Thread):
    """Polls both workers' ``/healthz``, ``ddbcdc status`` (every few seconds) and the stream
    time until stopped."""

    def __init__(
        self, workers: dict[str, Worker], database: str, application: str, env: dict[str, str]
    ) -> None:
        super().__init__(name="watch", daemon=True)
        self.workers = workers
        self.env = env
        self.alarms: list[tuple[float, list[Any]]] = []  # status exit 3: when, the shards
        self.statuses = 0
        self.engine = sa.create_engine(database)
        self.application = application
        self.unhealthy: list[tuple[float, str, int, str]] = []
        self.polls = 0
        self.stream_times: list[int] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        while not self._stop_event.wait(0.5):
            for wid, worker in self.workers.items():
                status, body = worker.get("/healthz")
                self.polls += 1
                if status != 200:
                    self.unhealthy.append((time.monotonic() - started, wid, status, body))
            if self.polls % 12 == 0:
                self._status(time.monotonic() - started)
            with self.engine.connect() as conn:
                for found in stream_times(conn, store=False):
                    if found.application == self.application and found.stream_time_us:
                        self.stream_times.append(found.stream_time_us)

    def _status(self, at: float) -> None:
        command = [sys.executable, "-m", "ddbcdc.cli", "status", "--json", "--stall-after"]
        command += [str(STALL_AFTER_S), "--application-name", self.application]
        done = subprocess.run(
            command, env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        self.statuses += 1
        if done.returncode == 3:
            shards = json.loads(done.stdout)["shards"]
            self.alarms.append((at, [(s["shard_id"], s["state"]) for s in shards]))

    def finish(self) -> None:
        self._stop_event.set()
        self.join(timeout=30)
        self.engine.dispose()


def shards(kinesis: Any, stream: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(open, closed) shards of the stream, open ones in hash-key order."""
    found = kinesis.list_shards(StreamName=stream)["Shards"]
    closed = [s for s in found if "EndingSequenceNumber" in s["SequenceNumberRange"]]
    open_ = [s for s in found if "EndingSequenceNumber" not in s["SequenceNumberRange"]]
    return sorted(open_, key=lambda s: int(s["HashKeyRange"]["StartingHashKey"])), closed


def wait_active(kinesis: Any, stream: str) -> None:
    def active() -> bool:
        summary = kinesis.describe_stream_summary(StreamName=stream)
        return bool(summary["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE")

    wait_for("the stream to be ACTIVE", active, 60, every=0.2)


def read_everywhere(
    kinesis: Any, stream: str, database: str, application: str, *workers: Worker
) -> float:
    """Wait until every open shard has started and every closed one has ended; seconds."""

    def done() -> bool:
        open_, closed = shards(kinesis, stream)
        rows = {
            r.shard_id: r
            for r in query(
                database,
                "SELECT shard_id, max_version_us, ended_at FROM ddbcdc_shard_progress "
                "WHERE application = :a",
                a=application,
            )
        }
        started = all(
            s["ShardId"] in rows and rows[s["ShardId"]].max_version_us is not None for s in open_
        )
        ended = all(s["ShardId"] in rows and rows[s["ShardId"]].ended_at for s in closed)
        return started and ended

    return wait_for("every shard to be read", done, STEP_TIMEOUT_S, *workers)


def test_resharding_under_load_raises_no_false_alarm(customers: Customers, tmp_path: Path) -> None:
    stack, database, stream = customers.stack, customers.database, customers.stream
    application = f"reshard-{uuid.uuid4().hex[:6]}"
    env = customers.worker_env(
        DDBCDC_APPLICATION_NAME=application, DDBCDC_STALL_AFTER_S=str(STALL_AFTER_S)
    )
    kinesis = aws.client("kinesis", stack.settings())
    load = SteadyLoad(stack, rate=30, keys=200, seed=21, table=customers.table)
    workers = {wid: Worker(env, tmp_path / f"worker-{wid}.log", "--worker-id", wid) for wid in "ab"}
    watch = Watch(workers, database, application, env)
    try:
        load.start()
        wait_for(
            "both workers to hold a lease and be healthy",
            lambda: (
                {lease.owner for lease in leases(stack, application).values()} == {"a", "b"}
                and all(w.get("/healthz") == (200, "ok\n") for w in workers.values())
            ),
            150,
            *workers.values(),
        )
        read_everywhere(kinesis, stream, database, application, *workers.values())
        watch.start()

        def step(name: str, action: Any) -> None:
            started = time.monotonic()
            action()
            wait_active(kinesis, stream)
            read_everywhere(kinesis, stream, database, application, *workers.values())
            print(f"{name}: every shard read {time.monotonic() - started:.0f}s after")

        step("UpdateShardCount 2 -> 4", lambda: kinesis.update_shard_count(
            StreamName=stream, TargetShardCount=4, ScalingType="UNIFORM_SCALING"
        ))  # fmt: skip

        def merge() -> None:
            first, second = shards(kinesis, stream)[0][:2]
            kinesis.merge_shards(
                StreamName=stream,
                ShardToMerge=first["ShardId"],
                AdjacentShardToMerge=second["ShardId"],
            )

        step("MergeShards", merge)

        def split() -> None:
            widest = max(
                shards(kinesis, stream)[0],
                key=lambda s: (
                    int(s["HashKeyRange"]["EndingHashKey"])
                    - int(s["HashKeyRange"]["StartingHashKey"])
                ),
            )
            low = int(widest["HashKeyRange"]["StartingHashKey"])
            high = int(widest["HashKeyRange"]["EndingHashKey"])
            kinesis.split_shard(
                StreamName=stream,
                ShardToSplit=widest["ShardId"],
                NewStartingHashKey=str((low + high) // 2),
            )

        step("SplitShard", split)
        step("UpdateShardCount down to 2", lambda: kinesis.update_shard_count(
            StreamName=stream, TargetShardCount=2, ScalingType="UNIFORM_SCALING"
        ))  # fmt: skip
        load.finish()
        assert_exact(customers, workers)
        time.sleep(2 * STALL_AFTER_S / 4)  # a last look, once the parents' leases are done
    finally:
        watch.finish()
        if load.is_alive():
            load.finish()
        codes = {wid: w.stop() for wid, w in workers.items()}
    assert watch.unhealthy == [], watch.unhealthy
    assert watch.alarms == [], watch.alarms
    assert watch.polls > 100 and watch.statuses > 5
    assert watch.stream_times, "no stream time was ever established"
    assert watch.stream_times == sorted(watch.stream_times), "stream time moved back"
    assert codes == {"a": 0, "b": 0}, [w.log_tail() for w in workers.values()]
    assert query(database, "SELECT count(*) FROM ddbcdc_dead_letters")[0][0] == 0


def assert_exact(customers: Customers, workers: dict[str, Worker]) -> None:
    dynamodb = aws.client("dynamodb", customers.stack.settings())
    engine = sa.create_engine(customers.database)
    last: list[Comparison] = []

    def same() -> bool:
        last[:] = [compare(dynamodb, engine, customers.mapping)]
        return last[0].matches

    try:
        waited = wait_for("PostgreSQL to equal the table", same, 120, *workers.values(), every=2)
    finally:
        engine.dispose()
    print(f"converged {waited:.0f}s after the load: {last[0]}")
    assert last[0].source_items > 50
