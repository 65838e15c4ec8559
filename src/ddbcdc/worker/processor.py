"""The KCL record processor: one process per shard, launched by the MultiLangDaemon.

It speaks amazon_kclpy's v3 multilang protocol on stdin/stdout. Per batch it runs
:meth:`ddbcdc.pipeline.Pipeline.process` (decode -> cleanse -> materialize, and the shard's
progress row, in one PostgreSQL transaction) and only then checkpoints at the batch's last
sequence number. Processing is synchronous, so a checkpoint never passes an unapplied record.

Failure rules:

* PostgreSQL unavailable (or any other error from the pipeline): retry the *same* batch
  forever, with capped exponential backoff and jitter. Returning from ``process_records``
  without applying would let the KCL move on and a later checkpoint would skip the batch.
  Each failed attempt is named (``statement_timeout``, ``lock_timeout``, ``database``,
  ``unexpected``) in the retry metric, the log line and ``ddbcdc status`` (``failures``).
  A note that could not be written is tried again each second of the wait: once it is,
  PostgreSQL is back, and the batch is retried at once (the backoff reaches 30 s).
* Poison records: the pipeline dead-letters them in the batch's transaction; go on.
* Checkpoint throttled (or DynamoDB trouble): retry a few times, then give up until the next
  batch; re-applying records is harmless because the materializer is idempotent.
* Checkpoint ``ShutdownException``: the lease is gone; stop checkpointing.
* ``shard_ended``: checkpoint at SHARD_END. ``shutdown_requested``: checkpoint at the last
  applied sequence number. ``lease_lost``: stop without checkpointing.
* The mapping: checked at start (:func:`ddbcdc.worker.entry.main`), then by every batch in
  its transaction (:class:`~ddbcdc.migrate.versions.Fence`). Once ``ddbcdc migrate`` has
  recorded another mapping for a table, the batch commits nothing and the processor exits
  (code 2) without checkpointing it: restarted, it starts with the new mapping file or
  refuses to (two mappings never write one table).

The process around it (stdout for the protocol only, logging, signals) is
:mod:`ddbcdc.worker.entry`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from amazon_kclpy import kcl
from amazon_kclpy.v3 import processor as kclv3

from ddbcdc.backoff import Backoff
from ddbcdc.errors import DatabaseTimeoutError, DatabaseUnavailableError, MappingChangedError
from ddbcdc.pipeline import BatchResult, ShardPosition, SourceRecord
from ddbcdc.worker.activity import CallActivity, observe_commit
from ddbcdc.worker.failures import describe_unexpected
from ddbcdc.worker.metrics import ProcessorMetrics

__all__ = ["BatchApplier", "ShardProcessor", "Stopped"]

log = logging.getLogger(__name__)

# KCL errors a checkpoint may be retried after (the names the daemon sends back).
_RETRYABLE_CHECKPOINT_ERRORS = frozenset(
    {"ThrottlingException", "KinesisClientLibDependencyException"}
)
_LEASE_LOST = "ShutdownException"
_WAIT_SLICE_S = 0.25
_NOTE_AGAIN_S = 1.0


class BatchApplier(Protocol):
    """What the processor needs of :class:`ddbcdc.pipeline.Pipeline`."""

    def process(
        self, records: Sequence[SourceRecord], *, position: ShardPosition | None = None
    ) -> BatchResult: ...

    def end_shard(self, application: str, shard_id: str) -> None: ...


class Stopped(SystemExit):
    """Raised out of a retry loop when the process must stop (SIGTERM, daemon gone).

    A SystemExit, because kclpy's dispatcher swallows ordinary exceptions and reports the
    action as done, which would let the KCL move past an unapplied batch.
    """


class ShardProcessor(kclv3.RecordProcessorBase):  # type: ignore[misc]
    """Applies one shard's batches to PostgreSQL, then checkpoints.

    Args:
        pipeline: the batch applier (a :class:`ddbcdc.pipeline.Pipeline`).
        application: the KCL application name (the shard progress row's key).
        metrics: where to count; a private set when None.
        apply_backoff: delays between attempts at one batch (retried forever).
        checkpoint_backoff: delays between checkpoint attempts.
        checkpoint_attempts: attempts per checkpoint before giving up until the next batch.
        sleep: the sleep function between retries (tests pass a fake clock); by default
            :func:`time.sleep` after recording the processor's activity, so a batch retried
            for long is not taken for a stalled shard.
        should_stop: polled while waiting to retry; True makes the process exit.
        touch: called with (shard, MillisBehindLatest) on every empty batch, to keep the
            shard's progress row fresh (see :class:`ddbcdc.worker.liveness.ProgressTouch`).
        heartbeat_s: seconds between activity marks inside a long call (0: none).
        failures: called with (position, reason, error) after each failed attempt at a
            batch; whether the note was written (see
            :class:`ddbcdc.worker.failures.FailureNote`).
        started: called with the shard id once it is known (the worker names the
            processor's PostgreSQL sessions after it: see
            :mod:`ddbcdc.materialize.shard_states`).
    """

    def __init__(
        self,
        pipeline: BatchApplier,
        *,
        application: str,
        metrics: ProcessorMetrics | None = None,
        apply_backoff: Backoff | None = None,
        checkpoint_backoff: Backoff | None = None,
        checkpoint_attempts: int = 6,
        sleep: Callable[[float], None] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        touch: Callable[[str, int | None], object] | None = None,
        heartbeat_s: float = 1.0,
        failures: Callable[[ShardPosition, str, str], bool] | None = None,
        started: Callable[[str], object] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.application = application
        self.metrics = metrics or ProcessorMetrics.create()
        self.activity = CallActivity(self.metrics, heartbeat_s=heartbeat_s)
        self.apply_backoff = apply_backoff or Backoff()
        self.checkpoint_backoff = checkpoint_backoff or Backoff(initial=0.2, maximum=5.0)
        self.checkpoint_attempts = max(1, checkpoint_attempts)
        self._sleep = sleep if sleep is not None else self._sleep_active
        self._should_stop = should_stop
        self._touch = touch
        self._failures = failures
        self._started = started
        self.last_applied: str | None = None
        self.last_checkpointed: str | None = None
        self.lease_lost_flag = False

    @property
    def shard_id(self) -> str:
        """The shard this processor reads ("unknown" before ``initialize``)."""
        return self.activity.shard_id

    @shard_id.setter
    def shard_id(self, value: str) -> None:
        self.activity.shard_id = value

    # --- KCL lifecycle -------------------------------------------------------------------

    def initialize(self, initialize_input: Any) -> None:
        """Remember the shard; nothing to open (the pipeline connects lazily)."""
        self.shard_id = str(initialize_input.shard_id)
        if self._started is not None:
            self._started(self.shard_id)
        self.activity.mark()
        log.info(
            "shard processor started shard=%s from_sequence=%s",
            self.shard_id,
            initialize_input.sequence_number,
        )

    def process_records(self, process_records_input: Any) -> None:
        """Apply the batch (retrying until PostgreSQL commits it), then checkpoint."""
        with self.activity.call():
            self._process_records(process_records_input)

    def _process_records(self, process_records_input: Any) -> None:
        millis = process_records_input.millis_behind_latest
        if millis is not None:
            self.metrics.millis_behind_latest.labels(self.shard_id).set(millis)
        records = [self._source_record(r) for r in process_records_input.records]
        if not records:
            if self._touch is not None:
                self._touch(self.shard_id, None if millis is None else int(millis))
            return
        last = records[-1].sequence_number
        assert last is not None
        position = ShardPosition(
            application=self.application,
            shard_id=self.shard_id,
            sequence_number=last,
            millis_behind_latest=None if millis is None else int(millis),
        )
        result = self._apply(records, position)
        observe_commit(self.metrics, result)
        self.last_applied = last
        self._count(result, len(records))
        log.debug(
            "batch applied shard=%s first=%s last=%s records=%d upserted=%d deleted=%d "
            "stale=%d dead_lettered=%d millis_behind=%s",
            self.shard_id,
            records[0].sequence_number,
            last,
            len(records),
            result.upserted,
            result.deleted,
            result.stale,
            result.dead_lettered,
            millis,
        )
        self._checkpoint(process_records_input.checkpointer, last)

    def lease_lost(self, lease_lost_input: Any) -> None:
        """Another worker owns the shard now: stop without checkpointing."""
        self.activity.mark()
        self.lease_lost_flag = True
        log.info("lease lost shard=%s last_applied=%s", self.shard_id, self.last_applied)

    def shard_ended(self, shard_ended_input: Any) -> None:
        """The shard is closed and fully applied: mark it ended, checkpoint at SHARD_END.

        Marked first, retried like a batch: an ended shard brings no more changes, so its
        position must stop holding tombstone pruning back (a missed mark holds it forever).
        """
        with self.activity.call():
            self._end_shard(shard_ended_input)

    def _end_shard(self, shard_ended_input: Any) -> None:
        log.info("shard ended shard=%s last_applied=%s", self.shard_id, self.last_applied)
        attempt = 0
        while True:
            try:
                self.pipeline.end_shard(self.application, self.shard_id)
                break
            except DatabaseUnavailableError as exc:
                delay = self.apply_backoff.delay(attempt)
                attempt += 1
                log.warning(
                    "shard end not recorded, will retry shard=%s attempt=%d delay_s=%.2f error=%s",
                    self.shard_id,
                    attempt,
                    delay,
                    exc,
                )
                self._wait(delay)
        self._checkpoint(shard_ended_input.checkpointer, None)

    def shutdown_requested(self, shutdown_requested_input: Any) -> None:
        """Graceful stop: the current batch is done (processing is synchronous); checkpoint it."""
        with self.activity.call():
            self._checkpoint_last(shutdown_requested_input)

    def _checkpoint_last(self, shutdown_requested_input: Any) -> None:
        log.info(
            "shutdown requested shard=%s last_applied=%s last_checkpointed=%s",
            self.shard_id,
            self.last_applied,
            self.last_checkpointed,
        )
        if self.last_applied is not None and self.last_applied != self.last_checkpointed:
            self._checkpoint(shutdown_requested_input.checkpointer, self.last_applied)

    def _sleep_active(self, seconds: float) -> None:
        self.activity.mark()
        time.sleep(seconds)

    # --- applying ------------------------------------------------------------------------

    def _source_record(self, record: Any) -> SourceRecord:
        return SourceRecord(
            data=record.binary_data,
            shard_id=self.shard_id,
            sequence_number=record.sequence_number,
            partition_key=record.partition_key,
            arrival_ms=record.timestamp_millis,
        )

    def _apply(self, records: Sequence[SourceRecord], position: ShardPosition) -> BatchResult:
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                result = self.pipeline.process(records, position=position)
            except MappingChangedError as exc:
                # Nothing of the batch committed, and it is not checkpointed: the processor
                # that takes the shard over applies it with the table's mapping.
                log.error(
                    "mapping changed, shard processor stopping shard=%s first=%s last=%s: %s",
                    self.shard_id,
                    records[0].sequence_number,
                    position.sequence_number,
                    exc,
                )
                raise Stopped(2) from exc
            except DatabaseTimeoutError as exc:
                reason, detail = exc.timeout, str(exc)
            except DatabaseUnavailableError as exc:
                reason, detail = "database", str(exc)
            except Exception as exc:  # the worker boundary: never skip a batch
                reason, detail = "unexpected", describe_unexpected(exc)
            else:
                elapsed = time.monotonic() - started
                self.metrics.apply_seconds.labels(self.shard_id).observe(elapsed)
                if attempt:
                    log.info(
                        "batch applied after retries shard=%s last=%s attempts=%d",
                        self.shard_id,
                        position.sequence_number,
                        attempt + 1,
                    )
                return result
            self._failed(records, position, attempt, reason, detail)
            attempt += 1

    def _failed(
        self,
        records: Sequence[SourceRecord],
        at: ShardPosition,
        attempt: int,
        why: str,
        detail: str,
    ) -> None:
        """Attempt ``attempt`` at the batch failed: say so everywhere, then wait to retry."""
        self.metrics.apply_retries.labels(self.shard_id, why).inc()
        noted = self._note(at, why, detail)
        delay = self.apply_backoff.delay(attempt)
        log.warning(
            "batch not applied, will retry shard=%s first=%s last=%s records=%d "
            "attempt=%d delay_s=%.2f reason=%s error=%s",
            *(self.shard_id, records[0].sequence_number, at.sequence_number, len(records)),
            *(attempt + 1, delay, why, detail),
        )
        if noted:
            self._wait(delay)
        elif self._wait(delay, until=lambda: self._note(at, why, detail)):
            log.info("PostgreSQL answers again, retrying now shard=%s", self.shard_id)

    def _note(self, at: ShardPosition, why: str, detail: str) -> bool:
        """Note the failed attempt where ``ddbcdc status`` reads it; whether it was written."""
        return self._failures is None or self._failures(at, why, detail)

    def _count(self, result: BatchResult, received: int) -> None:
        self.metrics.records.labels(self.shard_id).inc(received)
        self.metrics.batches.labels(self.shard_id).inc()
        for table, count in result.unmatched.items():
            self.metrics.unmatched.labels(table).inc(count)
        if result.dead_lettered:
            self.metrics.dead_letters.labels(self.shard_id).inc(result.dead_lettered)
            for (table, column, reason), count in result.reasons.items():
                self.metrics.dead_letter_reasons.labels(table, column, reason).inc(count)
            log.warning(
                "records dead-lettered shard=%s count=%d batch_last=%s",
                self.shard_id,
                result.dead_lettered,
                self.last_applied,
            )

    def _wait(self, seconds: float, until: Callable[[], bool] | None = None) -> bool:
        """Wait ``seconds``, or with ``until`` (asked about once a second) until it is true;
        whether it was. Raises :class:`Stopped` when the process must stop."""
        left, unasked = seconds, 0.0
        while True:
            if self._should_stop():
                log.warning("stopping while retrying shard=%s", self.shard_id)
                raise Stopped(1)
            if left <= 0:
                return False
            if until is not None and unasked >= _NOTE_AGAIN_S:
                if until():
                    return True
                unasked = 0.0
            step = min(left, _WAIT_SLICE_S)
            self._sleep(step)
            left -= step
            unasked += step

    # --- checkpointing -------------------------------------------------------------------

    def _checkpoint(self, checkpointer: Any, sequence_number: str | None) -> bool:
        """Checkpoint at ``sequence_number`` (None: SHARD_END / the latest delivered)."""
        if self.lease_lost_flag:
            return False
        for attempt in range(self.checkpoint_attempts):
            try:
                checkpointer.checkpoint(sequence_number=sequence_number, sub_sequence_number=None)
            except kcl.CheckpointError as exc:
                error = str(exc.value)
            else:
                self.last_checkpointed = sequence_number
                return True
            if error == _LEASE_LOST:
                self.lease_lost_flag = True
                self.metrics.checkpoint_failures.labels(self.shard_id, error).inc()
                log.info("checkpoint refused, lease lost shard=%s", self.shard_id)
                return False
            last_try = attempt + 1 >= self.checkpoint_attempts
            if error not in _RETRYABLE_CHECKPOINT_ERRORS or last_try:
                self.metrics.checkpoint_failures.labels(self.shard_id, error).inc()
                log.error(
                    "checkpoint failed shard=%s sequence=%s error=%s attempts=%d",
                    self.shard_id,
                    sequence_number,
                    error,
                    attempt + 1,
                )
                return False
            self.metrics.checkpoint_retries.labels(self.shard_id, error).inc()
            delay = self.checkpoint_backoff.delay(attempt)
            log.warning(
                "checkpoint retry shard=%s sequence=%s error=%s attempt=%d delay_s=%.2f",
                self.shard_id,
                sequence_number,
                error,
                attempt + 1,
                delay,
            )
            self._wait(delay)
        return False
