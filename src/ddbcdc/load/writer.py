"""Executing planned load operations against DynamoDB: pacing, batching, retries, counts.

* Pacing: a token bucket (:class:`ddbcdc.aws.throttle.TokenBucket`) reserves one token per
  write, so a steady ``rate`` holds over the run however long each call takes.
* Batching: consecutive operations are grouped per writer lane into BatchWriteItem calls of at
  most ``batch_size`` distinct keys; an operation on a key already in the open batch closes it
  first (DynamoDB rejects two requests for one key in a batch).
* Order: a key always goes to the same lane (``key % workers``) and a lane writes its batches
  one after the other, so the writes to any one key happen in plan order.
* Retries: throttling and transient errors (:attr:`ddbcdc.aws.errors.AwsError.retryable`)
  are retried with :data:`RETRY_BACKOFF`, UnprocessedItems are resent; all of it is counted
  in the :class:`LoadSummary`. The client should not retry by itself (build it with
  ``max_attempts=1``) so counts are real.
* Failures: a write DynamoDB refuses (a validation error) is counted and the run goes on;
  a fault of the environment (the table missing, access denied, the endpoint unreachable
  once retries are spent) ends the run with its :class:`~ddbcdc.aws.errors.AwsError`.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from boto3.dynamodb.types import TypeSerializer

from ddbcdc.aws.errors import (
    AwsAccessDeniedError,
    AwsError,
    AwsNotFoundError,
    AwsUnreachableError,
)
from ddbcdc.aws.resources import KEY_ATTRIBUTE
from ddbcdc.aws.throttle import TokenBucket
from ddbcdc.backoff import Backoff
from ddbcdc.decode.attributes import unmarshal
from ddbcdc.load.plan import OPS, LoadOptions, Operation, plan_operations

__all__ = ["RETRY_BACKOFF", "LoadSummary", "run_load", "scan_items"]

logger = logging.getLogger(__name__)

#: Faults that no later write can escape: they end the run.
_ENVIRONMENT_FAULTS = (AwsAccessDeniedError, AwsNotFoundError, AwsUnreachableError)
MAX_ATTEMPTS = 10
#: Waits between attempts at a write.
RETRY_BACKOFF = Backoff(initial=0.05, maximum=5.0)
LINGER_SECONDS = 0.02  # a paced run sends what it holds when it would wait longer than this

_serializer = TypeSerializer()


@dataclass
class LoadSummary:
    """What a load run did. ``writes`` counts successful writes by operation kind."""

    table: str
    seed: int
    planned: int
    writes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OPS, 0))
    batches: int = 0
    retries: int = 0
    throttles: int = 0
    unprocessed: int = 0
    errors: int = 0
    error_codes: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def total_writes(self) -> int:
        """Successful writes of every kind."""
        return sum(self.writes.values())

    @property
    def rate(self) -> float:
        """Achieved successful writes per second."""
        return self.total_writes / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``ddbcdc load --json``)."""
        return {
            "table": self.table,
            "seed": self.seed,
            "planned": self.planned,
            "writes": dict(self.writes),
            "total_writes": self.total_writes,
            "batches": self.batches,
            "retries": self.retries,
            "throttles": self.throttles,
            "unprocessed": self.unprocessed,
            "errors": self.errors,
            "error_codes": dict(self.error_codes),
            "elapsed_s": round(self.elapsed_s, 3),
            "rate": round(self.rate, 1),
        }


class _WriteFailedError(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class _Writer:
    """Sends batches with retries; thread-safe counting into one summary."""

    def __init__(self, client: Any, options: LoadOptions, summary: LoadSummary) -> None:
        self.client = client
        self.options = options
        self.summary = summary
        self.lock = threading.Lock()
        self.sleep: Callable[[float], None] = time.sleep  # replaced by run_load's
        self.now: Callable[[], float] = time.time  # epoch seconds, for TTL attributes

    def _expiry(self) -> dict[str, Any]:
        """The TTL attribute a write sets now (marshalled), or nothing."""
        name, seconds = self.options.ttl_attribute, self.options.ttl_seconds
        if name is None or seconds is None:
            return {}
        return {name: {"N": str(int(self.now() + seconds))}}

    def write(self, batch: list[Operation], rng: random.Random) -> None:
        try:
            if len(batch) == 1 and batch[0].kind == "modify" and self.options.modify_with_update:
                request = _update_request(self.options, batch[0], self._expiry())
                self._call(rng, self.client.update_item, **request)
            else:
                self._write_batch(batch, rng)
        except _WriteFailedError as failed:
            logger.warning(
                "%d writes to table %s failed: %s", len(batch), self.options.table, failed.code
            )
            with self.lock:
                self.summary.errors += len(batch)
                codes = self.summary.error_codes
                codes[failed.code] = codes.get(failed.code, 0) + len(batch)
            return
        with self.lock:
            self.summary.batches += 1
            for op in batch:
                self.summary.writes[op.kind] += 1

    def _write_batch(self, batch: list[Operation], rng: random.Random) -> None:
        expiry = self._expiry()
        requests = [_write_request(op, expiry) for op in batch]
        attempt = 0
        while requests:
            response = self._call(
                rng, self.client.batch_write_item, RequestItems={self.options.table: requests}
            )
            requests = response.get("UnprocessedItems", {}).get(self.options.table, [])
            if requests:
                with self.lock:
                    self.summary.unprocessed += len(requests)
                    self.summary.retries += 1
                if attempt + 1 >= MAX_ATTEMPTS:
                    raise _WriteFailedError("UnprocessedItems")
                self.sleep(RETRY_BACKOFF.delay(attempt, rng=rng.random))
                attempt += 1

    def _call(self, rng: random.Random, method: Callable[..., Any], **kwargs: Any) -> Any:
        for attempt in range(MAX_ATTEMPTS):
            try:
                return method(**kwargs)
            except AwsError as exc:
                last = attempt + 1 >= MAX_ATTEMPTS
                if isinstance(exc, _ENVIRONMENT_FAULTS) and (last or not exc.retryable):
                    raise
                if last or not exc.retryable:
                    raise _WriteFailedError(exc.code) from exc
                throttled = exc.throttled
            with self.lock:
                self.summary.retries += 1
                self.summary.throttles += int(throttled)
            self.sleep(RETRY_BACKOFF.delay(attempt, rng=rng.random))
        raise AssertionError("unreachable")


def _key(op: Operation) -> dict[str, Any]:
    if op.keys is not None:
        return {name: _serializer.serialize(value) for name, value in op.keys.items()}
    return {KEY_ATTRIBUTE: _serializer.serialize(op.key)}


def _write_request(op: Operation, expiry: dict[str, Any]) -> dict[str, Any]:
    if op.item is None:
        return {"DeleteRequest": {"Key": _key(op)}}
    item = {name: _serializer.serialize(value) for name, value in op.item.items()}
    return {"PutRequest": {"Item": {**item, **expiry}}}


def _update_request(options: LoadOptions, op: Operation, expiry: dict[str, Any]) -> dict[str, Any]:
    assert op.item is not None
    names = {f"#a{i}": name for i, name in enumerate(op.changed)}
    values = {f":v{i}": _serializer.serialize(op.item[name]) for i, name in enumerate(op.changed)}
    for name, value in expiry.items():
        names["#ttl"], values[":ttl"] = name, value
    assignments = ", ".join(
        [f"#a{i} = :v{i}" for i in range(len(op.changed))] + (["#ttl = :ttl"] if expiry else [])
    )
    return {
        "TableName": options.table,
        "Key": _key(op),
        "UpdateExpression": f"SET {assignments}",
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
    }


class _Lane(threading.Thread):
    """One writer thread: its batches run strictly in the order they were queued."""

    def __init__(self, index: int, writer: _Writer, failures: list[BaseException]) -> None:
        super().__init__(name=f"ddbcdc-load-{index}", daemon=True)
        self.queue: queue.Queue[list[Operation] | None] = queue.Queue(maxsize=8)
        self.writer = writer
        self.failures = failures
        self.rng = random.Random(index)  # jitter only; the plan has its own generator
        self.pending: list[Operation] = []
        self.pending_keys: set[int] = set()

    def run(self) -> None:
        while (batch := self.queue.get()) is not None:
            if self.failures:
                continue  # drain without writing once the run is failing
            try:
                self.writer.write(batch, self.rng)
            except BaseException as exc:  # handed to the dispatching thread, which re-raises
                self.failures.append(exc)


class _Dispatcher:
    """Paces operations and routes them into per-lane batches."""

    def __init__(
        self,
        options: LoadOptions,
        lanes: list[_Lane],
        tick: Callable[[], None],
        clock: Callable[[], float],
        sleep: Callable[[float], None],
    ) -> None:
        self.options = options
        self.lanes = lanes
        self.tick = tick
        self.clock = clock
        self.sleep = sleep
        self.bucket = TokenBucket(options.rate, clock=clock)
        self.last_flush = clock()

    def submit(self, op: Operation) -> None:
        wait = self.bucket.reserve()
        if wait > 0:
            if wait >= LINGER_SECONDS or self.clock() - self.last_flush >= LINGER_SECONDS:
                self.flush_all()
            self.sleep(wait)
        lane = self.lanes[op.key % len(self.lanes)]
        alone = op.kind == "modify" and self.options.modify_with_update
        if op.key in lane.pending_keys or (alone and lane.pending):
            self.flush(lane)
        lane.pending.append(op)
        lane.pending_keys.add(op.key)
        if alone or len(lane.pending) >= self.options.batch_size:
            self.flush(lane)

    def flush(self, lane: _Lane) -> None:
        if not lane.pending:
            return
        batch, lane.pending, lane.pending_keys = lane.pending, [], set()
        while True:
            try:
                lane.queue.put(batch, timeout=0.1)
                return
            except queue.Full:
                self.tick()

    def flush_all(self) -> None:
        for lane in self.lanes:
            self.flush(lane)
        self.last_flush = self.clock()


def run_load(
    client: Any,
    options: LoadOptions,
    *,
    operations: Iterable[Operation] | None = None,
    on_progress: Callable[[int], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> LoadSummary:
    """Write the planned operations to ``options.table`` and count what happened.

    Args:
        client: a boto3 DynamoDB client (best built with ``max_attempts=1``).
        options: table, pacing, batching, workers; also the plan when ``operations`` is None.
        operations: the operations to write, e.g. ``list(plan_operations(options))`` kept by
            the caller to compute :func:`~ddbcdc.load.plan.expected_state`.
        on_progress: called now and then with the number of operations finished so far.
        clock: monotonic seconds (injectable for tests).
        sleep: how to wait (injectable for tests).

    Raises:
        AwsError: the table does not exist, access is denied, the endpoint is unreachable.
    """
    ops = operations if operations is not None else plan_operations(options)
    planned = len(ops) if isinstance(ops, list | tuple) else options.count
    summary = LoadSummary(table=options.table, seed=options.seed, planned=planned)
    writer = _Writer(client, options, summary)
    writer.sleep = sleep
    failures: list[BaseException] = []
    lanes = [_Lane(i, writer, failures) for i in range(options.workers)]

    def tick() -> None:
        if on_progress is not None:
            with writer.lock:
                done = summary.total_writes + summary.errors
            on_progress(done)

    dispatcher = _Dispatcher(options, lanes, tick, clock, sleep)
    started = clock()
    for lane in lanes:
        lane.start()
    try:
        for op in ops:
            if failures:
                break
            dispatcher.submit(op)
            tick()
        dispatcher.flush_all()
    finally:
        for lane in lanes:
            lane.queue.put(None)
        for lane in lanes:
            while lane.is_alive():
                lane.join(timeout=0.1)
                tick()
    summary.elapsed_s = clock() - started
    if failures:
        raise failures[0]
    return summary


def scan_items(
    client: Any, table: str, key_of: Callable[[dict[str, Any]], int | None] | None = None
) -> dict[int, dict[str, Any]]:
    """Every item of ``table`` by its ``userid`` (or the number ``key_of`` gives it; None:
    an item the plan does not know), unmarshalled exactly (numbers as int or Decimal).

    Raises:
        AwsNotFoundError: the table does not exist.
    """
    items: dict[int, dict[str, Any]] = {}
    for page in client.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        for raw in page.get("Items", ()):
            item = unmarshal(raw, path=f"Scan({table})")
            key = int(item[KEY_ATTRIBUTE]) if key_of is None else key_of(item)
            if key is not None:
                items[key] = item
    return items
