"""The pure half of the local bridge: record format, partition keys and order-safe batches.

See :mod:`ddbcdc.local.bridge` (local stack only; in AWS, DynamoDB's managed Kinesis
streaming destination does this job).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = [
    "BridgeTarget",
    "Entry",
    "approximate_creation_us",
    "next_batch",
    "partition_key",
    "stream_name_from_arn",
    "to_kinesis_record",
]

MAX_BATCH_RECORDS = 500
MAX_BATCH_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class BridgeTarget:
    """One bridged table: where its changes come from and where they go."""

    table_name: str
    stream_arn: str
    kinesis_stream: str
    kinesis_region: str


@dataclass(frozen=True, slots=True)
class Entry:
    """One change ready for Kinesis."""

    partition_key: str
    data: bytes


def stream_name_from_arn(arn: str) -> tuple[str, str]:
    """(region, stream name) of ``arn:aws:kinesis:REGION:ACCOUNT:stream/NAME``."""
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[2] != "kinesis" or not parts[5].startswith("stream/"):
        raise ValueError(f"not a Kinesis stream ARN: {arn!r}")
    return parts[3], parts[5].removeprefix("stream/")


def partition_key(keys: Mapping[str, Any]) -> str:
    """A stable partition key for an item: the MD5 of its key attributes' canonical JSON."""
    canonical = orjson.dumps(keys, option=orjson.OPT_SORT_KEYS)
    return hashlib.md5(canonical, usedforsecurity=False).hexdigest()


def approximate_creation_us(value: float | int) -> int:
    """Epoch microseconds of a wire timestamp in epoch seconds with millisecond precision.

    Rounding to the millisecond only removes binary floating-point noise: the emulator sends
    milliseconds, so that is the true instant, written with microsecond units.
    """
    return round(float(value) * 1000) * 1000


def to_kinesis_record(
    record: Mapping[str, Any], *, table_name: str, identity: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """A DynamoDB Streams record (wire JSON) -> the Kinesis Data Streams for DynamoDB record;
    ``identity``: its userIdentity when the record has none (the TTL's, for an expiry)."""
    source = record["dynamodb"]
    dynamodb: dict[str, Any] = {
        "ApproximateCreationDateTime": approximate_creation_us(
            source["ApproximateCreationDateTime"]
        ),
        "Keys": source["Keys"],
    }
    for image in ("NewImage", "OldImage"):
        if image in source:
            dynamodb[image] = source[image]
    dynamodb["SizeBytes"] = source.get("SizeBytes")
    return {
        "awsRegion": record.get("awsRegion"),
        "eventID": record["eventID"],
        "eventName": record["eventName"],
        "userIdentity": record.get("userIdentity") or identity,
        "recordFormat": "application/json",
        "tableName": table_name,
        "dynamodb": dynamodb,
        "eventSource": "aws:dynamodb",
    }


def next_batch(pending: Sequence[Entry]) -> tuple[list[int], list[int]]:
    """Split ``pending`` into (indexes to send now, indexes to keep for later).

    A batch holds at most one entry per partition key, and never an entry whose key has an
    earlier entry still waiting, so sending it cannot reorder the changes of any key.
    """
    batch: list[int] = []
    later: list[int] = []
    seen: set[str] = set()
    size = 0
    for index, entry in enumerate(pending):
        fits = len(batch) < MAX_BATCH_RECORDS and size + len(entry.data) <= MAX_BATCH_BYTES
        if entry.partition_key in seen or not fits:
            later.append(index)
        else:
            batch.append(index)
            size += len(entry.data) + len(entry.partition_key)
        seen.add(entry.partition_key)
    return batch, later
