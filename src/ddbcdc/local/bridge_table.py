"""One bridged table: its DynamoDB stream read shard by shard, its changes written to Kinesis.

:class:`TableBridge` reads every shard of the table's stream (a child shard only once its
parent is read to the end; shards found after the start from TRIM_HORIZON) and hands each
GetRecords page, turned into Kinesis Data Streams for DynamoDB records
(:mod:`ddbcdc.local.bridge_format`), to its :class:`KinesisWriter`.

Order: one DynamoDB item always maps to one partition key, hence one Kinesis shard, and the
writer never reorders the changes of one key: a PutRecords request carries at most one
change per key, and a failed entry is retried before any later change of its key is sent.

Position: kept in memory only. A restarted bridge starts each stream from TRIM_HORIZON (or
LATEST, by flag), so it may write changes again; downstream versions make that harmless.

Expiry: a REMOVE the table's :class:`~ddbcdc.local.ttl.TtlSweeper` made is written with the
TTL service's userIdentity, as DynamoDB writes its own.
"""

from __future__ import annotations

import base64
import logging
import queue
import threading
import time
from typing import Any, Literal

import orjson

from ddbcdc.local.awsjson import AwsApiError, JsonApiClient
from ddbcdc.local.bridge_format import (
    BridgeTarget,
    Entry,
    next_batch,
    partition_key,
    to_kinesis_record,
)
from ddbcdc.local.ttl import TTL_IDENTITY, Expiries, TtlSweeper

__all__ = ["InitialPosition", "KinesisWriter", "TableBridge"]

log = logging.getLogger(__name__)

InitialPosition = Literal["TRIM_HORIZON", "LATEST"]

_IDLE_SLEEP = 0.05


class KinesisWriter(threading.Thread):
    """Writes chunks of entries to one Kinesis stream, in order per partition key."""

    def __init__(self, target: BridgeTarget, kinesis_endpoint: str, stop: threading.Event):
        super().__init__(name=f"bridge-writer-{target.table_name}", daemon=True)
        self.target = target
        self.chunks: queue.Queue[list[Entry]] = queue.Queue(maxsize=4)
        self.written = 0
        self._stop_event = stop
        self._client = JsonApiClient("kinesis", kinesis_endpoint, region=target.kinesis_region)

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                chunk = self.chunks.get(timeout=0.2)
            except queue.Empty:
                continue
            self._write(chunk)
        self._client.close()

    def _write(self, pending: list[Entry]) -> None:
        delay = 0.05
        while pending and not self._stop_event.is_set():
            send, later = next_batch(pending)
            failed = self._put([pending[i] for i in send])
            if failed is None:  # the whole call failed: retry the same batch
                self._stop_event.wait(delay)
                delay = min(delay * 2, 2.0)
                continue
            delay = 0.05
            self.written += len(send) - len(failed)
            keep = sorted([send[i] for i in failed] + later)
            pending = [pending[i] for i in keep]

    def _put(self, batch: list[Entry]) -> list[int] | None:
        """PutRecords; the positions in ``batch`` that failed, or None if the call failed."""
        records = [
            {"Data": base64.b64encode(e.data).decode("ascii"), "PartitionKey": e.partition_key}
            for e in batch
        ]
        try:
            answer = self._client.call(
                "PutRecords", {"StreamName": self.target.kinesis_stream, "Records": records}
            )
        except AwsApiError as exc:
            log.warning("PutRecords to %s failed: %s", self.target.kinesis_stream, exc)
            return None
        results = answer.get("Records", [])
        failed = [i for i, result in enumerate(results) if result.get("ErrorCode")]
        if failed:
            log.warning(
                "PutRecords to %s: %d of %d entries failed (%s), retrying them in order",
                self.target.kinesis_stream,
                len(failed),
                len(batch),
                results[failed[0]].get("ErrorCode"),
            )
        return failed


class TableBridge:
    """Reads every shard of one table's DynamoDB stream and feeds a :class:`KinesisWriter`."""

    def __init__(
        self,
        target: BridgeTarget,
        *,
        dynamodb_endpoint: str,
        kinesis_endpoint: str,
        region: str,
        start: InitialPosition,
        ttl_interval: float = 1.0,
    ) -> None:
        self.target = target
        self.read = 0
        self.expiries = Expiries()
        self._start: str = start
        self._stop_event = stop = threading.Event()
        self._streams = JsonApiClient("dynamodbstreams", dynamodb_endpoint, region=region)
        self._iterators: dict[str, str | None] = {}  # shard id -> iterator, None when done
        self._parents: dict[str, str | None] = {}
        self._last_sequence: dict[str, str] = {}
        self.writer = KinesisWriter(target, kinesis_endpoint, stop)
        self.reader = threading.Thread(
            target=self._read_loop, name=f"bridge-reader-{target.table_name}", daemon=True
        )
        self.sweeper = TtlSweeper(
            target.table_name,
            endpoint=dynamodb_endpoint,
            region=region,
            expiries=self.expiries,
            interval=ttl_interval,
            stop=stop,
        )

    def start(self) -> None:
        """Start reading, writing and expiring."""
        self.writer.start()
        self.reader.start()
        self.sweeper.start()

    def stop(self) -> None:
        """Ask both threads to stop (they finish their current call first)."""
        self._stop_event.set()

    def alive(self) -> bool:
        """Whether the reader still runs (it ends when the table or stream is gone)."""
        return self.reader.is_alive()

    def join(self, timeout: float) -> None:
        """Wait for both threads after the stop event is set."""
        self.reader.join(timeout)
        self.writer.join(timeout)
        self.sweeper.join(timeout)

    def _read_loop(self) -> None:
        described = 0.0
        while not self._stop_event.is_set():
            try:
                if time.monotonic() - described > 2.0:
                    self._refresh_shards()
                    described = time.monotonic()
                got = self._poll_shards()
            except AwsApiError as exc:
                if exc.code == "ResourceNotFoundException":
                    log.info("table %s or its stream is gone", self.target.table_name)
                    break
                log.warning("reading the stream of %s: %s", self.target.table_name, exc)
                self._stop_event.wait(0.5)
                continue
            if not got:
                self._stop_event.wait(_IDLE_SLEEP)
        self._streams.close()

    def _refresh_shards(self) -> None:
        request: dict[str, Any] = {"StreamArn": self.target.stream_arn}
        while True:
            description = self._streams.call("DescribeStream", request)["StreamDescription"]
            for shard in description.get("Shards", []):
                shard_id = shard["ShardId"]
                if shard_id not in self._iterators:
                    self._parents[shard_id] = shard.get("ParentShardId")
                    self._iterators[shard_id] = self._iterator(shard_id, self._start)
            last = description.get("LastEvaluatedShardId")
            if not last:
                break
            request["ExclusiveStartShardId"] = last
        # Shards found later (children, a re-enabled stream) are read from their start.
        self._start = "TRIM_HORIZON"

    def _iterator(self, shard_id: str, kind: str) -> str:
        request = {"StreamArn": self.target.stream_arn, "ShardId": shard_id}
        if kind == "AFTER_SEQUENCE_NUMBER":
            request["SequenceNumber"] = self._last_sequence[shard_id]
        request["ShardIteratorType"] = kind
        return str(self._streams.call("GetShardIterator", request)["ShardIterator"])

    def _poll_shards(self) -> int:
        total = 0
        for shard_id, iterator in list(self._iterators.items()):
            parent = self._parents.get(shard_id)
            if iterator is None or (parent is not None and self._iterators.get(parent)):
                continue  # finished, or its parent is not read to the end yet
            try:
                answer = self._streams.call(
                    "GetRecords", {"ShardIterator": iterator, "Limit": 1000}
                )
            except AwsApiError as exc:
                if exc.code != "ExpiredIteratorException":
                    raise
                resume = shard_id in self._last_sequence
                kind = "AFTER_SEQUENCE_NUMBER" if resume else "TRIM_HORIZON"
                self._iterators[shard_id] = self._iterator(shard_id, kind)
                continue
            self._iterators[shard_id] = answer.get("NextShardIterator")
            records = answer.get("Records", [])
            if records:
                self._last_sequence[shard_id] = records[-1]["dynamodb"]["SequenceNumber"]
                self._hand_over(records)
                total += len(records)
        return total

    def _hand_over(self, records: list[dict[str, Any]]) -> None:
        table = self.target.table_name
        expired = self.expiries.is_expiry
        chunk = [
            Entry(
                partition_key(record["dynamodb"]["Keys"]),
                orjson.dumps(
                    to_kinesis_record(
                        record,
                        table_name=table,
                        identity=TTL_IDENTITY if expired(table, record) else None,
                    )
                ),
            )
            for record in records
        ]
        while not self._stop_event.is_set():
            try:
                self.writer.chunks.put(chunk, timeout=0.2)
            except queue.Full:
                continue
            self.read += len(chunk)
            return
