"""The bridge: DynamoDB Streams -> Kinesis, for the LOCAL STACK ONLY.

In AWS this module has no job: DynamoDB's managed Kinesis streaming destination
(EnableKinesisStreamingDestination) writes every change of a table to a Kinesis data stream.
moto does not implement that destination, so the local stack runs this bridge instead. It
bridges every table that has a DynamoDB stream with NEW_AND_OLD_IMAGES and the tag
``ddbcdc:local-kinesis-destination`` whose value is the ARN of the Kinesis stream, and writes
each change to that stream in the exact Kinesis Data Streams for DynamoDB record format.

Order: one DynamoDB item always maps to one partition key, hence one Kinesis shard, and the
bridge never reorders the changes of one key: a PutRecords request carries at most one
change per key, and a failed entry is retried before any later change of its key is sent.

Timestamps: moto sends ApproximateCreationDateTime as epoch seconds with millisecond
precision (its serializer truncates to milliseconds). The bridge writes that exact instant in
microseconds and never invents finer digits; changes in the same millisecond are ordered
downstream by their Kinesis sequence numbers, which follow the write order of each key.

Position: kept in memory only. A restarted bridge starts each stream from TRIM_HORIZON (or
LATEST, by flag), so it may write changes again; downstream versions make that harmless.
"""

from __future__ import annotations

import argparse
import base64
import logging
import queue
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import orjson

from ddbcdc.aws.wiring import LOCAL_DESTINATION_TAG
from ddbcdc.local.awsjson import AwsApiError, JsonApiClient
from ddbcdc.local.bridge_format import (
    BridgeTarget,
    Entry,
    next_batch,
    partition_key,
    stream_name_from_arn,
    to_kinesis_record,
)

__all__ = ["Bridge", "main"]

log = logging.getLogger(__name__)

InitialPosition = Literal["TRIM_HORIZON", "LATEST"]

_IDLE_SLEEP = 0.05


class _Writer(threading.Thread):
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


class _TableBridge:
    """Reads every shard of one table's DynamoDB stream and feeds a :class:`_Writer`."""

    def __init__(
        self,
        target: BridgeTarget,
        *,
        dynamodb_endpoint: str,
        kinesis_endpoint: str,
        region: str,
        start: InitialPosition,
    ) -> None:
        self.target = target
        self.read = 0
        self._start: str = start
        self._stop_event = stop = threading.Event()
        self._streams = JsonApiClient("dynamodbstreams", dynamodb_endpoint, region=region)
        self._iterators: dict[str, str | None] = {}  # shard id -> iterator, None when done
        self._parents: dict[str, str | None] = {}
        self._last_sequence: dict[str, str] = {}
        self.writer = _Writer(target, kinesis_endpoint, stop)
        self.reader = threading.Thread(
            target=self._read_loop, name=f"bridge-reader-{target.table_name}", daemon=True
        )

    def start(self) -> None:
        """Start reading and writing."""
        self.writer.start()
        self.reader.start()

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
        chunk = [
            Entry(
                partition_key(record["dynamodb"]["Keys"]),
                orjson.dumps(to_kinesis_record(record, table_name=table)),
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


class Bridge:
    """Finds the tables to bridge, and bridges each one on its own reader and writer threads.

    Args:
        dynamodb_endpoint: moto's URL (DynamoDB and DynamoDB Streams).
        kinesis_endpoint: kinesis-local's plain URL.
        region: the region of the tables.
        initial_position: where streams found at start are read from; streams found later
            are always read from TRIM_HORIZON, so no change made after setup is missed.
        discover_interval: seconds between looks for new tables.
    """

    def __init__(
        self,
        *,
        dynamodb_endpoint: str,
        kinesis_endpoint: str,
        region: str = "us-east-1",
        initial_position: InitialPosition = "TRIM_HORIZON",
        discover_interval: float = 1.0,
    ) -> None:
        self.dynamodb_endpoint = dynamodb_endpoint
        self.kinesis_endpoint = kinesis_endpoint
        self.region = region
        self.initial_position: InitialPosition = initial_position
        self.discover_interval = discover_interval
        self._dynamodb = JsonApiClient("dynamodb", dynamodb_endpoint, region=region)
        self._bridges: dict[str, _TableBridge] = {}
        self._recheck: dict[str, tuple[float, float]] = {}  # name -> (due, backoff)

    def discover(self) -> list[BridgeTarget]:
        """Tables not bridged yet that have a NEW_AND_OLD_IMAGES stream and the tag.

        A table that does not qualify is looked at again after 1, 2, 4... up to 10 seconds:
        ``ddbcdc setup`` may add the stream or the tag just after creating it.
        """
        targets = []
        now = time.monotonic()
        for name in self._table_names():
            bridged = self._bridges.get(name)
            due, wait = self._recheck.get(name, (0.0, 0.5))
            if (bridged is not None and bridged.alive()) or now < due:
                continue
            try:
                target = self._target(name)
            except AwsApiError as exc:
                if exc.code != "ResourceNotFoundException":
                    raise
                continue
            if target is None:
                wait = min(wait * 2, 10.0)
                self._recheck[name] = (now + wait, wait)
            else:
                self._recheck.pop(name, None)
                targets.append(target)
        return targets

    def _table_names(self) -> list[str]:
        names: list[str] = []
        request: dict[str, Any] = {}
        while True:
            answer = self._dynamodb.call("ListTables", request)
            names.extend(answer.get("TableNames", []))
            if not answer.get("LastEvaluatedTableName"):
                return names
            request["ExclusiveStartTableName"] = answer["LastEvaluatedTableName"]

    def _target(self, name: str) -> BridgeTarget | None:
        table = self._dynamodb.call("DescribeTable", {"TableName": name})["Table"]
        spec = table.get("StreamSpecification") or {}
        stream_arn = table.get("LatestStreamArn")
        if not (spec.get("StreamEnabled") and stream_arn):
            return None
        if spec.get("StreamViewType") != "NEW_AND_OLD_IMAGES":
            return None
        answer = self._dynamodb.call("ListTagsOfResource", {"ResourceArn": table["TableArn"]})
        tags = {tag["Key"]: tag["Value"] for tag in answer.get("Tags", [])}
        destination = tags.get(LOCAL_DESTINATION_TAG)
        if not destination:
            return None
        try:
            region, stream = stream_name_from_arn(destination)
        except ValueError:
            log.warning("table %s: tag %s is not a Kinesis stream ARN", name, LOCAL_DESTINATION_TAG)
            return None
        return BridgeTarget(name, stream_arn, stream, region)

    def counts(self) -> dict[str, tuple[int, int]]:
        """Per bridged table: (changes read from DynamoDB, changes written to Kinesis)."""
        return {name: (b.read, b.writer.written) for name, b in self._bridges.items()}

    def run(self, stop: threading.Event, *, ready: threading.Event | None = None) -> None:
        """Bridge until ``stop`` is set; ``ready`` is set after the first discovery."""
        first = True
        while not stop.is_set():
            try:
                self._bridge_new(self.discover(), first=first)
            except AwsApiError as exc:
                log.warning("discovering tables: %s", exc)
            else:
                if first and ready is not None:
                    ready.set()
                first = False
            stop.wait(self.discover_interval)
        for bridge in self._bridges.values():
            bridge.stop()
        for bridge in self._bridges.values():
            bridge.join(5.0)
        self._dynamodb.close()

    def _bridge_new(self, targets: list[BridgeTarget], *, first: bool) -> None:
        for name in [n for n, b in self._bridges.items() if not b.alive()]:
            del self._bridges[name]  # gone: bridged again if it comes back
        for target in targets:
            current = self._bridges.get(target.table_name)
            if current is not None and current.target == target:
                continue
            log.info(
                "bridging table %s -> Kinesis stream %s", target.table_name, target.kinesis_stream
            )
            bridge = _TableBridge(
                target,
                dynamodb_endpoint=self.dynamodb_endpoint,
                kinesis_endpoint=self.kinesis_endpoint,
                region=self.region,
                start=self.initial_position if first else "TRIM_HORIZON",
            )
            if current is not None:
                current.stop()
            self._bridges[target.table_name] = bridge
            bridge.start()


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ddbcdc.local.bridge",
        description="Local stack only: copy DynamoDB stream changes to Kinesis "
        "(in AWS, DynamoDB's managed Kinesis streaming destination does this).",
    )
    parser.add_argument("--dynamodb-endpoint", required=True)
    parser.add_argument("--kinesis-endpoint", required=True)
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument(
        "--initial-position", choices=["TRIM_HORIZON", "LATEST"], default="TRIM_HORIZON"
    )
    parser.add_argument("--discover-interval", type=float, default=1.0)
    parser.add_argument("--ready-file", type=Path, help="created once the bridge runs")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the bridge in the foreground until SIGTERM or SIGINT."""
    import signal

    args = _parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    stop, ready = threading.Event(), threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    bridge = Bridge(
        dynamodb_endpoint=args.dynamodb_endpoint,
        kinesis_endpoint=args.kinesis_endpoint,
        region=args.region,
        initial_position=args.initial_position,
        discover_interval=args.discover_interval,
    )
    runner = threading.Thread(target=bridge.run, args=(stop,), kwargs={"ready": ready})
    runner.start()
    announced = False
    last: dict[str, tuple[int, int]] = {}
    while runner.is_alive():
        runner.join(1.0)
        if ready.is_set() and not announced:
            announced = True
            log.info("bridge ready")
            if args.ready_file is not None:
                args.ready_file.write_text("ready\n")
        counts = bridge.counts()
        if counts != last and int(time.monotonic()) % 10 == 0:
            log.info("changes (read, written) per table: %s", counts)
            last = counts
    return 0


if __name__ == "__main__":
    sys.exit(main())
