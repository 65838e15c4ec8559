"""The bridge: DynamoDB Streams -> Kinesis, for the LOCAL STACK ONLY.

In AWS this module has no job: DynamoDB's managed Kinesis streaming destination
(EnableKinesisStreamingDestination) writes every change of a table to a Kinesis data stream.
moto does not implement that destination, so the local stack runs this bridge instead. It
bridges every table that has a DynamoDB stream with NEW_AND_OLD_IMAGES and the tag
``ddbcdc:local-kinesis-destination`` whose value is the ARN of the Kinesis stream, and writes
each change to that stream in the exact Kinesis Data Streams for DynamoDB record format.

Each bridged table runs on a reader and a writer thread of its own
(:mod:`ddbcdc.local.bridge_table`, which states the order it keeps); this module finds the
tables to bridge and runs the bridge as a process.

Time to Live: moto never expires an item, so each bridged table also gets a sweeper that
deletes expired items as DynamoDB does, and the bridge stamps those REMOVEs with the TTL
service's identity (:mod:`ddbcdc.local.ttl`).

Timestamps: moto sends ApproximateCreationDateTime as epoch seconds with millisecond
precision (its serializer truncates to milliseconds). The bridge writes that exact instant in
microseconds and never invents finer digits; changes in the same millisecond are ordered
downstream by their Kinesis sequence numbers, which follow the write order of each key.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ddbcdc.aws.wiring import LOCAL_DESTINATION_TAG
from ddbcdc.local.awsjson import AwsApiError, JsonApiClient
from ddbcdc.local.bridge_format import BridgeTarget, stream_name_from_arn
from ddbcdc.local.bridge_table import InitialPosition, TableBridge

__all__ = ["Bridge", "main"]

log = logging.getLogger(__name__)


class Bridge:
    """Finds the tables to bridge, and bridges each one on its own reader and writer threads.

    Args:
        dynamodb_endpoint: moto's URL (DynamoDB and DynamoDB Streams).
        kinesis_endpoint: kinesis-local's plain URL.
        region: the region of the tables.
        initial_position: where streams found at start are read from; streams found later
            are always read from TRIM_HORIZON, so no change made after setup is missed.
        discover_interval: seconds between looks for new tables.
        ttl_interval: seconds between sweeps for expired items of a table with TTL enabled.
    """

    def __init__(
        self,
        *,
        dynamodb_endpoint: str,
        kinesis_endpoint: str,
        region: str = "us-east-1",
        initial_position: InitialPosition = "TRIM_HORIZON",
        discover_interval: float = 1.0,
        ttl_interval: float = 1.0,
    ) -> None:
        self.ttl_interval = ttl_interval
        self.dynamodb_endpoint = dynamodb_endpoint
        self.kinesis_endpoint = kinesis_endpoint
        self.region = region
        self.initial_position: InitialPosition = initial_position
        self.discover_interval = discover_interval
        self._dynamodb = JsonApiClient("dynamodb", dynamodb_endpoint, region=region)
        self._bridges: dict[str, TableBridge] = {}
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

    def counts(self) -> dict[str, tuple[int, int, int]]:
        """Per bridged table: (changes read from DynamoDB, changes written to Kinesis, items
        expired by its TTL)."""
        return {
            name: (b.read, b.writer.written, b.sweeper.expired) for name, b in self._bridges.items()
        }

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
            bridge = TableBridge(
                target,
                dynamodb_endpoint=self.dynamodb_endpoint,
                kinesis_endpoint=self.kinesis_endpoint,
                region=self.region,
                start=self.initial_position if first else "TRIM_HORIZON",
                ttl_interval=self.ttl_interval,
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
    parser.add_argument(
        "--ttl-interval",
        type=float,
        default=1.0,
        help="seconds between sweeps for expired items of tables with TTL enabled",
    )
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
        ttl_interval=args.ttl_interval,
    )
    runner = threading.Thread(target=bridge.run, args=(stop,), kwargs={"ready": ready})
    runner.start()
    announced = False
    last: dict[str, tuple[int, int, int]] = {}
    while runner.is_alive():
        runner.join(1.0)
        if ready.is_set() and not announced:
            announced = True
            log.info("bridge ready")
            if args.ready_file is not None:
                args.ready_file.write_text("ready\n")
        counts = bridge.counts()
        if counts != last and int(time.monotonic()) % 10 == 0:
            log.info("changes (read, written, expired) per table: %s", counts)
            last = counts
    return 0


if __name__ == "__main__":
    sys.exit(main())
