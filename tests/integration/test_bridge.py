"""The local bridge: DynamoDB (moto) stream -> Kinesis (kinesis-local), exact record format."""

from __future__ import annotations

import base64
import json
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest

from ddbcdc.aws.wiring import LOCAL_DESTINATION_TAG as DESTINATION_TAG
from ddbcdc.local.bridge_format import partition_key
from ddbcdc.local.stack import LocalStack

FIELDS = {
    "awsRegion",
    "eventID",
    "eventName",
    "userIdentity",
    "recordFormat",
    "tableName",
    "dynamodb",
    "eventSource",
}


def _setup(
    client: Callable[[str, str], Any], stack: LocalStack, name: str, shards: int = 2
) -> tuple[Any, Any]:
    ddb = client("dynamodb", stack.dynamodb_endpoint)
    kinesis = client("kinesis", stack.kinesis_endpoint)
    kinesis.create_stream(StreamName=name, ShardCount=shards)
    arn = _wait_active(kinesis, name)
    ddb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "N"},
        ],
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    # Tagged after creation, as setup may do: the bridge must still find it.
    table_arn = ddb.describe_table(TableName=name)["Table"]["TableArn"]
    ddb.tag_resource(ResourceArn=table_arn, Tags=[{"Key": DESTINATION_TAG, "Value": arn}])
    return ddb, kinesis


def _wait_active(kinesis: Any, name: str, timeout: float = 30) -> str:
    """The stream's ARN once it is ACTIVE (kinesis-local creates streams asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
        if summary["StreamStatus"] == "ACTIVE":
            return str(summary["StreamARN"])
        assert time.monotonic() < deadline, f"stream {name} still {summary['StreamStatus']}"
        time.sleep(0.1)


def _read_all(kinesis: Any, name: str, expected: int, timeout: float = 90) -> list[dict[str, Any]]:
    shards = [s["ShardId"] for s in kinesis.list_shards(StreamName=name)["Shards"]]
    iterators = {
        s: kinesis.get_shard_iterator(StreamName=name, ShardId=s, ShardIteratorType="TRIM_HORIZON")[
            "ShardIterator"
        ]
        for s in shards
    }
    records: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(records) < expected:
        assert time.monotonic() < deadline, f"only {len(records)} of {expected} records arrived"
        got = 0
        for shard, iterator in iterators.items():
            answer = kinesis.get_records(ShardIterator=iterator, Limit=10000)
            iterators[shard] = answer["NextShardIterator"]
            for record in answer["Records"]:
                records.append({"shard": shard, **record})
            got += len(answer["Records"])
        if not got:
            time.sleep(0.2)
    return records


def _item(pk: str, sk: int, version: int) -> dict[str, Any]:
    return {
        "pk": {"S": pk},
        "sk": {"N": str(sk)},
        "v": {"N": str(version)},
        "price": {"N": "10.50"},
        "blob": {"B": bytes([version % 256, 0, 255])},
        "tags": {"SS": ["a", "b"]},
        "nested": {"M": {"l": {"L": [{"N": "1"}, {"NULL": True}, {"BOOL": False}]}}},
    }


def _wire(item: dict[str, Any]) -> dict[str, Any]:
    """An attribute map as JSON carries it (B base64)."""
    out = dict(item)
    out["blob"] = {"B": base64.b64encode(item["blob"]["B"]).decode()}
    return out


def test_bridge_writes_exact_kinesis_records_in_key_order(
    local_stack: LocalStack, emulator_client: Callable[[str, str], Any]
) -> None:
    ddb, kinesis = _setup(emulator_client, local_stack, "bridged")
    keys = [(f"user-{i}", i % 3) for i in range(30)]
    history: dict[tuple[str, int], list[tuple[str, int | None]]] = defaultdict(list)
    started_us = time.time_ns() // 1000 - 1_000_000
    for version in range(4):
        for pk, sk in keys:
            ddb.put_item(TableName="bridged", Item=_item(pk, sk, version))
            history[(pk, sk)].append(("INSERT" if version == 0 else "MODIFY", version))
    for pk, sk in keys[::3]:
        ddb.delete_item(TableName="bridged", Key={"pk": {"S": pk}, "sk": {"N": str(sk)}})
        history[(pk, sk)].append(("REMOVE", None))
    finished_us = time.time_ns() // 1000 + 1_000_000
    expected = sum(len(events) for events in history.values())

    records = _read_all(kinesis, "bridged", expected)
    assert len(records) == expected
    by_key: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    shards_of_key: dict[tuple[str, int], set[str]] = defaultdict(set)
    event_ids = set()
    for record in records:
        payload = json.loads(record["Data"])
        assert set(payload) == FIELDS
        assert payload["recordFormat"] == "application/json"
        assert payload["eventSource"] == "aws:dynamodb"
        assert payload["tableName"] == "bridged"
        assert payload["awsRegion"] == "us-east-1"
        assert payload["userIdentity"] is None
        event_ids.add(payload["eventID"])
        change = payload["dynamodb"]
        stamp = change["ApproximateCreationDateTime"]
        assert isinstance(stamp, int)
        assert started_us <= stamp <= finished_us
        assert stamp % 1000 == 0  # moto's millisecond precision, written in microseconds
        assert isinstance(change["SizeBytes"], int) and change["SizeBytes"] > 0
        key = (change["Keys"]["pk"]["S"], int(change["Keys"]["sk"]["N"]))
        assert change["Keys"] == {"pk": {"S": key[0]}, "sk": {"N": str(key[1])}}
        assert record["PartitionKey"] == partition_key(change["Keys"])
        by_key[key].append({"seq": int(record["SequenceNumber"]), **payload})
        shards_of_key[key].add(record["shard"])
    assert len(event_ids) == expected
    assert all(len(shards) == 1 for shards in shards_of_key.values())
    assert {record["shard"] for record in records} == {
        "shardId-000000000000",
        "shardId-000000000001",
    }
    for key, events in by_key.items():
        events.sort(key=lambda e: e["seq"])
        seen = []
        for event in events:
            change = event["dynamodb"]
            if event["eventName"] == "REMOVE":
                assert "NewImage" not in change
                seen.append(("REMOVE", None))
            else:
                version = int(change["NewImage"]["v"]["N"])
                assert change["NewImage"] == _wire(_item(*key, version))
                seen.append((event["eventName"], version))
            if event["eventName"] == "INSERT":
                assert "OldImage" not in change
            else:
                old = int(change["OldImage"]["v"]["N"])
                assert change["OldImage"] == _wire(_item(*key, old))
        assert seen == history[key], key
        stamps = [e["dynamodb"]["ApproximateCreationDateTime"] for e in events]
        assert stamps == sorted(stamps)


def test_bridge_ignores_tables_without_the_tag(
    local_stack: LocalStack, emulator_client: Callable[[str, str], Any]
) -> None:
    ddb, kinesis = _setup(emulator_client, local_stack, "tagged")
    ddb.create_table(
        TableName="untagged",
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    ddb.put_item(TableName="untagged", Item={"pk": {"S": "x"}})
    ddb.put_item(TableName="tagged", Item={"pk": {"S": "y"}, "sk": {"N": "1"}})
    records = _read_all(kinesis, "tagged", 1)
    time.sleep(2.0)  # longer than the bridge's discovery interval
    records += _read_all(kinesis, "tagged", 0, timeout=1)
    assert [json.loads(r["Data"])["tableName"] for r in records] == ["tagged"]


@pytest.mark.slow
def test_bridge_throughput(
    local_stack: LocalStack, emulator_client: Callable[[str, str], Any]
) -> None:
    """Moves a few thousand changes; prints the rate (moto's GetRecords is the limit)."""
    ddb, kinesis = _setup(emulator_client, local_stack, "busy", shards=2)
    count = 3000
    first_write = time.monotonic()
    for start in range(0, count, 25):
        ddb.batch_write_item(
            RequestItems={
                "busy": [
                    {"PutRequest": {"Item": {"pk": {"S": f"k{i % 500}"}, "sk": {"N": str(i)}}}}
                    for i in range(start, start + 25)
                ]
            }
        )
    last_write = time.monotonic()
    records = _read_all(kinesis, "busy", count, timeout=120)
    done = time.monotonic()
    print(
        f"bridge: {count} changes written in {last_write - first_write:.1f}s, all in Kinesis "
        f"{done - last_write:.1f}s after the last write ({count / (done - first_write):.0f}/s)"
    )
    assert len(records) == count
