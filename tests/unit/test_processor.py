"""The shard processor, driven through the KCL multilang JSON protocol in memory.

A fake daemon plays the MultiLangDaemon's side of stdin/stdout: it feeds actions one at a time
(the next only after the processor reported the previous one done) and answers checkpoint
requests, with errors when a test asks for them. No Java here.

These tests use a small scripted stand-in for the pipeline because they are about the protocol
(retries, checkpoints, lease loss); the real pipeline against PostgreSQL is exercised in
tests/integration/test_processor_pipeline.py.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

import pytest
from amazon_kclpy import kcl
from prometheus_client import CollectorRegistry

from ddbcdc.backoff import Backoff
from ddbcdc.errors import DatabaseUnavailableError, MappingChangedError
from ddbcdc.pipeline import BatchResult, ShardPosition, SourceRecord
from ddbcdc.worker.metrics import ProcessorMetrics
from ddbcdc.worker.processor import ShardProcessor, Stopped
from multilang_fake import Discard, FakeDaemon, initialize, process

SHARD = "shardId-000000000001"


class ScriptedPipeline:
    """Records every call; raises the scripted failures first (None: that call succeeds),
    then succeeds."""

    def __init__(
        self, failures: Iterable[Exception | None] = (), dead_lettered: int = 0, unmatched: int = 0
    ) -> None:
        self.failures = deque(failures)
        self.dead_lettered = dead_lettered
        self.unmatched = unmatched
        self.calls: list[tuple[list[SourceRecord], ShardPosition | None]] = []
        self.ended: list[str] = []
        self.end_failures: deque[Exception] = deque()
        self.daemon: FakeDaemon | None = None  # where commits are noted, in order

    def process(
        self, records: Sequence[SourceRecord], *, position: ShardPosition | None = None
    ) -> BatchResult:
        self.calls.append((list(records), position))
        last = records[-1].sequence_number if records else None
        failure = self.failures.popleft() if self.failures else None
        if failure is not None:
            if self.daemon is not None:
                self.daemon.note("failed", last)
            raise failure
        if self.daemon is not None:
            self.daemon.note("commit", last)
        reasons = {("customers", "phone", "S where numeric expected"): self.dead_lettered}
        return BatchResult(
            received=len(records),
            upserted=len(records) - self.dead_lettered,
            dead_lettered=self.dead_lettered,
            reasons=reasons if self.dead_lettered else {},
            unmatched={"shop": self.unmatched} if self.unmatched else {},
        )

    def end_shard(self, application: str, shard_id: str) -> None:
        self.ended.append(shard_id)
        failed = bool(self.end_failures)
        if self.daemon is not None:
            self.daemon.note("end failed" if failed else "ended", shard_id)
        if failed:
            raise self.end_failures.popleft()


class Harness:
    def __init__(
        self,
        actions: Iterable[dict[str, Any]],
        *,
        pipeline: ScriptedPipeline | None = None,
        checkpoint_errors: Iterable[str] = (),
        stop_after_sleeps: int | None = None,
        failures: Any = None,
    ) -> None:
        self.touched: list[tuple[str, int | None]] = []
        self.daemon = FakeDaemon(actions, checkpoint_errors)
        self.pipeline = pipeline or ScriptedPipeline()
        self.pipeline.daemon = self.daemon
        self.registry = CollectorRegistry()
        self.sleeps: list[float] = []
        self.stop_after_sleeps = stop_after_sleeps
        self.processor = ShardProcessor(
            self.pipeline,
            application="app",
            metrics=ProcessorMetrics.create(self.registry),
            apply_backoff=Backoff(initial=1.0, maximum=8.0),
            checkpoint_backoff=Backoff(initial=0.5, maximum=2.0),
            checkpoint_attempts=4,
            sleep=self.sleeps.append,
            should_stop=self._should_stop,
            touch=lambda shard, behind: self.touched.append((shard, behind)),
            failures=failures,
        )

    def _should_stop(self) -> bool:
        return self.stop_after_sleeps is not None and len(self.sleeps) >= self.stop_after_sleeps

    def run(self) -> FakeDaemon:
        kcl.KCLProcess(
            self.processor,
            input_file=self.daemon,
            output_file=self.daemon,
            error_file=Discard(),
        ).run()
        return self.daemon

    def metric(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, {"shard": SHARD, **labels})


def test_batch_is_applied_with_its_position_then_checkpointed_at_its_last_record() -> None:
    h = Harness([initialize(), process(11, 12, 13, behind=250), {"action": "shutdownRequested"}])
    daemon = h.run()

    assert daemon.statuses == ["initialize", "processRecords", "shutdownRequested"]
    assert daemon.checkpoints == ["13"]  # nothing new to checkpoint at shutdown
    [(records, position)] = h.pipeline.calls
    assert [(r.data, r.sequence_number, r.partition_key, r.shard_id) for r in records] == [
        (b'{"n":11}', "11", "k11", SHARD),
        (b'{"n":12}', "12", "k12", SHARD),
        (b'{"n":13}', "13", "k13", SHARD),
    ]
    assert position == ShardPosition("app", SHARD, "13", 250)
    checkpoint = next(m for m in daemon.received if m["action"] == "checkpoint")
    assert checkpoint["subSequenceNumber"] is None
    assert h.metric("ddbcdc_worker_records_total") == 3
    assert h.metric("ddbcdc_worker_batches_total") == 1
    assert h.metric("ddbcdc_worker_millis_behind_latest") == 250
    assert h.metric("ddbcdc_worker_apply_seconds_count") == 1


def test_checkpoint_comes_after_the_status_of_nothing_else() -> None:
    """Per batch: the checkpoint request precedes the batch's status; order is strict."""
    h = Harness([initialize(), process(1, 2), process(3), process(4, 5, 6)])
    daemon = h.run()
    assert [m["action"] for m in daemon.received] == [
        "status",
        "checkpoint",
        "status",
        "checkpoint",
        "status",
        "checkpoint",
        "status",
    ]
    assert daemon.checkpoints == ["2", "3", "6"]


def test_database_unavailable_retries_the_same_batch_and_checkpoints_only_after_commit() -> None:
    down = DatabaseUnavailableError("connection refused")
    h = Harness(
        [initialize(), process(7, 8), process(9)],
        pipeline=ScriptedPipeline(failures=[down, down, down]),
    )
    daemon = h.run()

    batches = [[r.sequence_number for r in records] for records, _ in h.pipeline.calls]
    assert batches == [["7", "8"]] * 4 + [["9"]]
    assert daemon.journal == [
        *[("failed", "8")] * 3,
        ("commit", "8"),
        ("checkpoint", "8"),
        ("commit", "9"),
        ("checkpoint", "9"),
    ]
    # capped exponential backoff, equal jitter: attempt n waits within [b/2, b], b = 1, 2, 4
    waited = _waits(h.sleeps, count=3)
    for got, base in zip(waited, [1.0, 2.0, 4.0], strict=True):
        assert base / 2 <= got <= base
    assert h.metric("ddbcdc_worker_apply_retries_total", reason="database") == 3
    assert h.metric("ddbcdc_worker_batches_total") == 2


def test_a_failure_not_noted_is_noted_again_while_waiting_and_the_batch_retried_once_it_is() -> (
    None
):
    """PostgreSQL down: the note fails too. Once a note is written again, PostgreSQL is back
    and the batch is retried then, not at the end of its backoff (15-30 s here)."""
    notes: list[bool] = []

    def note(position: ShardPosition, reason: str, error: str) -> bool:
        notes.append(len(notes) >= 3)  # written from the fourth try on
        return notes[-1]

    h = Harness(
        [initialize(), process(1)],
        pipeline=ScriptedPipeline(failures=[DatabaseUnavailableError("connection refused")]),
        failures=note,
    )
    h.processor.apply_backoff = Backoff(initial=30.0, maximum=30.0)
    daemon = h.run()

    assert notes == [False, False, False, True]  # at the failure, then after 1, 2 and 3 s
    assert sum(h.sleeps) == pytest.approx(3.0)
    assert daemon.checkpoints == ["1"]


def test_no_checkpoint_passes_a_record_postgresql_has_not_committed() -> None:
    down = DatabaseUnavailableError("connection refused")
    h = Harness(
        [initialize(), process(1, 2), process(3), process(4, 5), {"action": "shutdownRequested"}],
        pipeline=ScriptedPipeline(failures=[down, down]),
        checkpoint_errors=["InvalidStateException"],  # the first one fails: again at shutdown
    )
    daemon = h.run()
    committed = 0
    for event, sequence in daemon.journal:
        if event == "commit":
            committed = int(sequence or 0)
        elif event == "checkpoint":
            assert sequence is not None and int(sequence) <= committed, daemon.journal
    assert daemon.checkpoints == ["2", "3", "5"]


def test_unexpected_errors_are_retried_and_logged_without_their_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "ssn=123-45-6789"
    h = Harness(
        [initialize(), process(1)],
        pipeline=ScriptedPipeline(failures=[ValueError(secret)]),
    )
    with caplog.at_level(logging.DEBUG, logger="ddbcdc.worker.processor"):
        daemon = h.run()
    assert len(h.pipeline.calls) == 2
    assert daemon.checkpoints == ["1"]
    assert "ValueError" in caplog.text
    assert secret not in caplog.text
    assert h.metric("ddbcdc_worker_apply_retries_total", reason="unexpected") == 1


def test_stop_while_retrying_exits_without_status_or_checkpoint() -> None:
    """Returning a status for an unapplied batch would let the KCL move past it."""
    down = DatabaseUnavailableError("connection refused")
    h = Harness(
        [initialize(), process(1), process(2)],
        pipeline=ScriptedPipeline(failures=[down] * 100),
        stop_after_sleeps=3,
    )
    with pytest.raises(SystemExit):
        h.run()
    assert h.daemon.statuses == ["initialize"]
    assert h.daemon.checkpoints == []


def test_throttled_checkpoint_is_retried_at_the_same_sequence_number() -> None:
    h = Harness(
        [initialize(), process(3, 4)],
        checkpoint_errors=["ThrottlingException", "KinesisClientLibDependencyException"],
    )
    daemon = h.run()
    assert daemon.checkpoints == ["4", "4", "4"]
    assert daemon.statuses == ["initialize", "processRecords"]
    assert len(h.pipeline.calls) == 1  # the batch is not re-applied
    assert h.metric("ddbcdc_worker_checkpoint_retries_total", error="ThrottlingException") == 1


def test_checkpoint_given_up_after_its_attempts_then_next_batch_checkpoints() -> None:
    h = Harness(
        [initialize(), process(1), process(2)],
        checkpoint_errors=["ThrottlingException"] * 4,
    )
    daemon = h.run()
    assert daemon.checkpoints == ["1", "1", "1", "1", "2"]
    assert h.metric("ddbcdc_worker_checkpoint_failures_total", error="ThrottlingException") == 1


def test_shutdown_requested_checkpoints_what_a_failed_checkpoint_left_behind() -> None:
    h = Harness(
        [initialize(), process(1, 2), {"action": "shutdownRequested"}],
        checkpoint_errors=["InvalidStateException"],
    )
    daemon = h.run()
    assert daemon.checkpoints == ["2", "2"]  # not retried in the batch; again at shutdown
    assert daemon.statuses[-1] == "shutdownRequested"


def test_lease_lost_at_checkpoint_stops_all_checkpointing() -> None:
    h = Harness(
        [initialize(), process(1), process(2), {"action": "shutdownRequested"}],
        checkpoint_errors=["ShutdownException"],
    )
    daemon = h.run()
    assert daemon.checkpoints == ["1"]
    assert len(h.pipeline.calls) == 2
    assert h.metric("ddbcdc_worker_checkpoint_failures_total", error="ShutdownException") == 1


def test_lease_lost_reports_done_without_checkpointing() -> None:
    h = Harness([initialize(), process(5), {"action": "leaseLost"}])
    daemon = h.run()
    assert daemon.statuses == ["initialize", "processRecords", "leaseLost"]
    assert daemon.checkpoints == ["5"]
    assert h.processor.lease_lost_flag


def test_shard_ended_checkpoints_at_shard_end() -> None:
    h = Harness(
        [initialize(), process(5), {"action": "shardEnded"}],
        checkpoint_errors=[None, "ThrottlingException"],  # type: ignore[list-item]
    )
    h.pipeline.end_failures.append(DatabaseUnavailableError("down"))
    daemon = h.run()
    assert daemon.checkpoints == ["5", None, None]
    assert daemon.statuses == ["initialize", "processRecords", "shardEnded"]
    assert daemon.journal == [
        ("commit", "5"),
        ("checkpoint", "5"),
        ("end failed", SHARD),
        ("ended", SHARD),  # marked ended (retried), then checkpointed
        ("checkpoint", None),
        ("checkpoint", None),
    ]


def test_empty_batches_update_lag_without_touching_postgres() -> None:
    h = Harness([initialize(), process(behind=0), process(1, behind=1500), process(behind=0)])
    daemon = h.run()
    assert len(h.pipeline.calls) == 1
    assert daemon.checkpoints == ["1"]
    assert h.metric("ddbcdc_worker_millis_behind_latest") == 0


def test_every_call_is_recorded_and_empty_batches_touch_the_progress_row() -> None:
    h = Harness([initialize(), process(behind=40), process(1, behind=1500), process(behind=0)])
    before = time.time()
    h.run()
    assert h.touched == [(SHARD, 40), (SHARD, 0)]  # the non-empty batch writes its own row
    active = h.metric("ddbcdc_worker_last_activity_timestamp_seconds")
    assert active is not None and before <= active <= time.time()
    assert h.metric("ddbcdc_worker_in_call") == 0


def test_a_batch_being_applied_or_retried_is_in_a_call() -> None:
    seen: list[float | None] = []

    class Watching(ScriptedPipeline):
        def process(
            self, records: Sequence[SourceRecord], *, position: ShardPosition | None = None
        ) -> BatchResult:
            seen.append(h.metric("ddbcdc_worker_in_call"))
            return super().process(records, position=position)

    down = DatabaseUnavailableError("connection refused")
    h = Harness([initialize(), process(1)], pipeline=Watching(failures=[down, down]))
    h.run()
    assert seen == [1.0, 1.0, 1.0]
    assert h.metric("ddbcdc_worker_in_call") == 0


def test_dead_letters_are_counted_and_the_batch_still_checkpoints() -> None:
    h = Harness([initialize(), process(1, 2, 3)], pipeline=ScriptedPipeline(dead_lettered=2))
    daemon = h.run()
    assert daemon.checkpoints == ["3"]
    assert h.metric("ddbcdc_worker_dead_letters_total") == 2
    by_reason = h.registry.get_sample_value(
        "ddbcdc_worker_dead_letter_reasons_total",
        {"table": "customers", "column": "phone", "reason": "S where numeric expected"},
    )
    assert by_reason == 2


def test_unmatched_items_are_counted_per_routed_mapping() -> None:
    h = Harness([initialize(), process(1, 2), process(3)], pipeline=ScriptedPipeline(unmatched=2))
    h.run()
    counted = h.registry.get_sample_value("ddbcdc_worker_unmatched_total", {"table": "shop"})
    assert counted == 4


@pytest.mark.parametrize("attempt", [0, 1, 5, 30, 10_000])
def test_backoff_is_capped_and_jittered(attempt: int) -> None:
    backoff = Backoff(initial=0.1, maximum=30.0)
    base = min(30.0, 0.1 * 2**attempt) if attempt < 64 else 30.0
    assert backoff.delay(attempt, rng=lambda: 0.0) == pytest.approx(base / 2)
    assert backoff.delay(attempt, rng=lambda: 1.0) == pytest.approx(base)


def _waits(slices: list[float], *, count: int) -> list[float]:
    """Regroup the sliced sleeps of ``_wait`` into whole waits (slices are <= 0.25 s)."""
    waits: list[float] = []
    current = 0.0
    for s in slices:
        current += s
        if s < 0.25 - 1e-9:
            waits.append(current)
            current = 0.0
    if current:
        waits.append(current)
    assert len(waits) == count, slices
    return waits


def test_a_batch_fenced_by_a_migration_stops_the_processor_without_a_checkpoint() -> None:
    """The batch's transaction found another mapping (and committed nothing): no retry, no
    checkpoint; the processor exits and the shard's next owner applies the batch."""
    fenced = MappingChangedError("column 'city' added")
    pipeline = ScriptedPipeline(failures=[DatabaseUnavailableError("down"), None, fenced])
    h = Harness([initialize(), process(1), process(2), process(3)], pipeline=pipeline)
    with pytest.raises(Stopped) as stopped:
        h.run()
    assert stopped.value.code == 2
    sequences = [records[0].sequence_number for records, _ in pipeline.calls]
    assert sequences == ["1", "1", "2"]  # batch 1 retried after the outage, batch 2 once
    assert h.daemon.checkpoints == ["1"]  # batch 2 neither applied nor checkpointed


def test_waits_between_retries_are_activity(monkeypatch: pytest.MonkeyPatch) -> None:
    """By default the processor sleeps itself, recording that it is alive at each wait."""
    slept: list[float] = []
    monkeypatch.setattr("ddbcdc.worker.processor.time.sleep", slept.append)
    down = DatabaseUnavailableError("connection refused")
    registry = CollectorRegistry()
    processor = ShardProcessor(
        ScriptedPipeline(failures=[down]),
        application="app",
        metrics=ProcessorMetrics.create(registry),
    )
    processor.shard_id = SHARD
    processor._sleep(0.5)
    assert slept == [0.5]
    assert registry.get_sample_value(
        "ddbcdc_worker_last_activity_timestamp_seconds", {"shard": SHARD}
    ) == pytest.approx(time.time(), abs=5)
