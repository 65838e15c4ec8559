"""Decode throughput: ddbcdc.decode_record against the usual Python paths, in one run.

    .venv/bin/python benchmarks/decode_bench.py [--count N] [--repeat R] [--cpu C]

Every contender decodes the same file of base64 Kinesis-format change records (``simple``:
the customers records of the README example; ``rich``: every attribute type), one after
the other in each round, so machine noise hits all of them alike. Reports records/s (best
and median round) and the median of the per-round ratios. Inputs are generated on first
use (see ``decode_data.py``).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.data_classes.kinesis_stream_event import KinesisStreamRecord
from aws_lambda_powertools.utilities.parser.models import (
    DynamoDBStreamChangedRecordModel,
    KinesisDataStreamRecord,
)
from boto3.dynamodb.types import Binary, TypeDeserializer

from ddbcdc import decode_record
from ddbcdc.decode import attributes
from ddbcdc.decode import record as decode

# decode_data sits next to this script, which Python puts first on sys.path.
from decode_data import DEFAULT_DIR, KINDS, ensure

Run = Callable[[list[Any]], None]


class _Boto3Deserializer(TypeDeserializer):
    """boto3's deserializer, taught that B arrives as base64 text in JSON (it expects bytes)."""

    def _deserialize_b(self, value: Any) -> Binary:
        return Binary(base64.b64decode(value))


_BOTO3 = _Boto3Deserializer()


def floor(lines: list[bytes]) -> None:
    """base64 + orjson.loads, nothing else: the lower bound of any decoder."""
    loads, a2b = orjson.loads, binascii.a2b_base64
    for line in lines:
        loads(a2b(line))


def ddbcdc(lines: list[bytes]) -> None:
    """ddbcdc.decode_record(line) -> a full, frozen ChangeRecord."""
    for line in lines:
        decode_record(line)


def ddbcdc_pure_python(lines: list[bytes]) -> None:
    """decode_record with the C speedups switched off: the pure-Python path."""
    saved = attributes._fast_unmarshal, decode._fast_build, decode._fast_decode
    attributes._fast_unmarshal = decode._fast_build = decode._fast_decode = None
    try:
        ddbcdc(lines)
    finally:
        attributes._fast_unmarshal, decode._fast_build, decode._fast_decode = saved


def boto3_path(lines: list[bytes]) -> None:
    """base64.b64decode + json.loads + boto3 TypeDeserializer on Keys, NewImage, OldImage."""
    deserialize = _BOTO3.deserialize
    for line in lines:
        dynamodb = json.loads(base64.b64decode(line))["dynamodb"]
        for image in ("Keys", "NewImage", "OldImage"):
            if image in dynamodb:
                {name: deserialize(value) for name, value in dynamodb[image].items()}


def powertools_data_classes(records: list[dict[str, Any]]) -> None:
    """KinesisStreamRecord(r).kinesis.data_as_json() -> DynamoDBRecord, every field read."""
    for raw in records:
        change = DynamoDBRecord(KinesisStreamRecord(raw).kinesis.data_as_json())
        stream = change.dynamodb
        assert stream is not None
        _ = (change.event_id, change.event_name, change.aws_region, change.user_identity)
        _ = (stream.keys, stream.new_image, stream.old_image)
        _ = (stream.approximate_creation_date_time, stream.size_bytes)


def powertools_parser(records: list[dict[str, Any]]) -> None:
    """KinesisDataStreamRecord.model_validate (base64) + json.loads + the dynamodb part
    validated by DynamoDBStreamChangedRecordModel (Powertools has no model of the whole
    Kinesis-format record; its DynamoDBStreamRecordModel needs eventSourceARN/eventVersion)."""
    for raw in records:
        record = KinesisDataStreamRecord.model_validate(raw)
        change = json.loads(record.kinesis.data)  # type: ignore[arg-type]
        DynamoDBStreamChangedRecordModel.model_validate(
            {
                **change["dynamodb"],
                "SequenceNumber": record.kinesis.sequenceNumber,
                "StreamViewType": "NEW_AND_OLD_IMAGES",
            }
        )


def lambda_records(lines: list[bytes]) -> list[dict[str, Any]]:
    """The lines as records of a Lambda Kinesis event (what Powertools starts from)."""
    out = []
    for index, line in enumerate(lines):
        sequence = str(49590338271490256608559692538361571095921575989136588898 + index)
        out.append(
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": "pk",
                    "sequenceNumber": sequence,
                    "data": line.decode("ascii"),
                    "approximateArrivalTimestamp": 1667565640.1,
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": f"shardId-000000000000:{sequence}",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": "arn:aws:iam::123456789012:role/bench",
                "awsRegion": "us-west-2",
                "eventSourceARN": "arn:aws:kinesis:us-west-2:123456789012:stream/bench",
            }
        )
    return out


CONTENDERS: dict[str, tuple[Run, bool]] = {
    # name: (run, takes Lambda records instead of lines)
    "floor (a2b_base64 + orjson.loads)": (floor, False),
    "ddbcdc decode_record": (ddbcdc, False),
    "ddbcdc decode_record, pure Python": (ddbcdc_pure_python, False),
    "boto3 (json.loads + TypeDeserializer)": (boto3_path, False),
    "powertools data_classes": (powertools_data_classes, True),
    "powertools parser": (powertools_parser, True),
}
OURS, BOTO3, POWERTOOLS = (
    "ddbcdc decode_record",
    "boto3 (json.loads + TypeDeserializer)",
    (
        "powertools data_classes",
        "powertools parser",
    ),
)


def bench(lines: list[bytes], repeat: int) -> dict[str, list[float]]:
    """records/s of every contender, one list entry per round."""
    events = lambda_records(lines)
    rates: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    names = list(CONTENDERS)
    for round_ in range(repeat):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            run, wants_events = CONTENDERS[name]
            data: list[Any] = events if wants_events else lines
            gc.collect()
            start = time.perf_counter()
            run(data)
            rates[name].append(len(data) / (time.perf_counter() - start))
    return rates


def report(kind: str, rates: dict[str, list[float]]) -> None:
    """Print one table: records/s and ratios (median of per-round ratios)."""

    def ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(rates[a], rates[b], strict=True))

    print(f"\n## {kind}\n")
    print("| contender | best rec/s | median rec/s | ddbcdc is x faster |")
    print("| --- | ---: | ---: | ---: |")
    for name, values in rates.items():
        speedup = "" if name == OURS else f"{ratio(OURS, name):.2f}"
        print(f"| {name} | {max(values):,.0f} | {statistics.median(values):,.0f} | {speedup} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000, help="records per file")
    parser.add_argument("--repeat", type=int, default=7, help="interleaved rounds")
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU")
    parser.add_argument("--data", type=Path, default=DEFAULT_DIR, help="input directory")
    args = parser.parse_args()
    cpu = args.cpu if args.cpu is not None else min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    files = ensure(args.data, args.count)
    print(f"# decode benchmark: {args.count} records/file, {args.repeat} rounds, cpu {cpu}")
    print(f"python {sys.version.split()[0]}, orjson {orjson.__version__}")
    if not attributes.ACCELERATED:
        print("(C speedups not built, or DDBCDC_SPEEDUPS=0: both ddbcdc rows are pure Python)")
    for kind in KINDS:
        lines = files[kind].read_bytes().split()
        report(kind, bench(lines, args.repeat))


if __name__ == "__main__":
    main()
