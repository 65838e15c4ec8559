"""The local DynamoDB Streams front over the session's moto, through boto3's own client:
shards split by key, whole-second timestamps, rollover and split with children found by
ShardFilter, closed parents that end, and the records of every key in order along its lineage;
items expired by the front's Time to Live sweeper, their REMOVEs with the TTL service's
identity as the GetRecords API gives it, and a user's REMOVE without one."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from ddbcdc.aws import clients as aws
from ddbcdc.aws.errors import AwsError, AwsNotFoundError
from ddbcdc.local.stack import LocalStack
from ddbcdc.local.streams_front import StreamsFront, serve
from ddbcdc.schema.bookkeeping import shard_progress
from ddbcdc.schema.mapping import load_mappings
from ddbcdc.worker.shards import ShardRegistry, dynamodb_open_shards


@pytest.fixture(autouse=True)
def credentials(local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        monkeypatch.setenv(name, local_stack.env[name])


@pytest.fixture
def table(local_stack: LocalStack) -> Iterator[tuple[str, str]]:
    """A table with a NEW_AND_OLD_IMAGES stream: (name, stream ARN)."""
    client = aws.client("dynamodb", local_stack.settings())
    name = f"front_{uuid.uuid4().hex[:8]}"
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "userid", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "userid", "AttributeType": "N"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    yield name, client.describe_table(TableName=name)["Table"]["LatestStreamArn"]
    client.delete_table(TableName=name)


@pytest.fixture
def front(local_stack: LocalStack) -> Iterator[tuple[StreamsFront, Any]]:
    """A front on a free port, and a boto3 DynamoDB Streams client for it."""
    served = StreamsFront(local_stack.dynamodb_endpoint, shards=2)
    server = serve(served)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    yield served, aws.client("dynamodbstreams", local_stack.settings(dynamodbstreams_endpoint=url))
    server.shutdown()
    thread.join(5)
    server.server_close()
    served.close()


def write(local_stack: LocalStack, table: str, keys: range, tag: str) -> None:
    client = aws.client("dynamodb", local_stack.settings())
    for key in keys:
        client.put_item(
            TableName=table, Item={"userid": {"N": str(key)}, "first_name": {"S": f"{tag}{key}"}}
        )


def read_shard(streams: Any, arn: str, shard: str) -> tuple[list[dict[str, Any]], bool]:
    """Every record of ``shard`` from TRIM_HORIZON; whether it ended (no next iterator)."""
    iterator = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records: list[dict[str, Any]] = []
    for _ in range(20):
        answer = streams.get_records(ShardIterator=iterator, Limit=7)
        records += answer["Records"]
        iterator = answer.get("NextShardIterator")
        if iterator is None:
            return records, True
        if not answer["Records"]:
            return records, False
    raise AssertionError("the shard never stopped answering records")


def test_shards_lineage_and_records_as_dynamodb_streams_serves_them(
    local_stack: LocalStack, table: tuple[str, str], front: tuple[StreamsFront, Any]
) -> None:
    name, arn = table
    served, streams = front
    write(local_stack, name, range(1, 21), "a")
    first = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    assert len(first) == 2 and all("ParentShardId" not in s for s in first)
    assert all("EndingSequenceNumber" not in s["SequenceNumberRange"] for s in first)

    children = served.rollover(arn)
    write(local_stack, name, range(1, 21), "b")
    grandchildren = served.rollover(arn, split=True)
    write(local_stack, name, range(1, 21), "c")

    shards = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    assert [s["ShardId"] for s in shards[:2]] == [s["ShardId"] for s in first]
    by_id = {s["ShardId"]: s for s in shards}
    assert {by_id[c]["ParentShardId"] for c in children} == {s["ShardId"] for s in first}
    found = streams.describe_stream(
        StreamArn=arn, ShardFilter={"Type": "CHILD_SHARDS", "ShardId": children[0]}
    )["StreamDescription"]["Shards"]
    assert len(found) == 2 and {s["ShardId"] for s in found} <= set(grandchildren)
    page = streams.describe_stream(StreamArn=arn, Limit=3)["StreamDescription"]
    assert len(page["Shards"]) == 3 and page["LastEvaluatedShardId"] == shards[2]["ShardId"]

    names: dict[int, list[str]] = {}
    for shard in shards:
        records, ended = read_shard(streams, arn, shard["ShardId"])
        assert ended == ("EndingSequenceNumber" in shard["SequenceNumberRange"])
        numbers = [int(r["dynamodb"]["SequenceNumber"]) for r in records]
        assert numbers == sorted(numbers)
        for record in records:
            created = record["dynamodb"]["ApproximateCreationDateTime"]
            assert created.microsecond == 0  # whole seconds, as DynamoDB Streams sends them
            key = int(record["dynamodb"]["Keys"]["userid"]["N"])
            names.setdefault(key, []).append(record["dynamodb"]["NewImage"]["first_name"]["S"])
    # Every key once per generation, in the order it was written, whichever shards it took.
    assert names == {k: [f"a{k}", f"b{k}", f"c{k}"] for k in range(1, 21)}


def test_expired_items_are_removed_by_the_ttl_service_as_the_api_shows_it(
    local_stack: LocalStack, table: tuple[str, str], front: tuple[StreamsFront, Any]
) -> None:
    """Item 1 expires; item 4's TTL has passed too, but a user deletes it before the front's
    sweeper starts; item 3 a user deletes; item 2 expires in an hour."""
    name, arn = table
    served, streams = front
    dynamodb = aws.client("dynamodb", local_stack.settings())
    dynamodb.update_time_to_live(
        TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"}
    )
    now = int(time.time())
    for userid, expires in ((1, now - 5), (2, now + 3600), (3, None), (4, now - 5)):
        ttl = {} if expires is None else {"expires_at": {"N": str(expires)}}
        dynamodb.put_item(TableName=name, Item={"userid": {"N": str(userid)}, **ttl})
    for userid in (3, 4):
        dynamodb.delete_item(TableName=name, Key={"userid": {"N": str(userid)}})
    served.expire_tables()
    deadline = time.monotonic() + 30
    while dynamodb.scan(TableName=name, ConsistentRead=True)["Items"] != [
        {"userid": {"N": "2"}, "expires_at": {"N": str(now + 3600)}}
    ]:
        assert time.monotonic() < deadline, "item 1 did not expire"
        time.sleep(0.2)
    service = {"PrincipalId": "dynamodb.amazonaws.com", "Type": "Service"}
    shards = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    for _ in range(2):  # served the same way every time it is read
        removes = {
            int(r["dynamodb"]["Keys"]["userid"]["N"]): r.get("userIdentity")
            for shard in shards
            for r in read_shard(streams, arn, shard["ShardId"])[0]
            if r["eventName"] == "REMOVE"
        }
        assert removes == {1: service, 3: None, 4: None}
    assert served.ttl.expired()[name] == 1  # (other tests' tables share the stack)


def test_iterators_at_and_after_a_sequence_number_and_errors(
    local_stack: LocalStack, table: tuple[str, str], front: tuple[StreamsFront, Any]
) -> None:
    name, arn = table
    _, streams = front
    write(local_stack, name, range(1, 9), "a")
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    records, _ = read_shard(streams, arn, shard)
    second = records[1]["dynamodb"]["SequenceNumber"]
    for kind, expected in (
        ("AT_SEQUENCE_NUMBER", records[1:]),
        ("AFTER_SEQUENCE_NUMBER", records[2:]),
    ):
        iterator = streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard, ShardIteratorType=kind, SequenceNumber=second
        )["ShardIterator"]
        got = streams.get_records(ShardIterator=iterator)["Records"]
        assert [r["eventID"] for r in got] == [r["eventID"] for r in expected]
    latest = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="LATEST")
    assert streams.get_records(ShardIterator=latest["ShardIterator"])["Records"] == []
    with pytest.raises(AwsNotFoundError):
        streams.get_shard_iterator(
            StreamArn=arn,
            ShardId="shardId-00000000000000000000-deadbeef",
            ShardIteratorType="TRIM_HORIZON",
        )
    with pytest.raises(AwsError, match="ValidationException"):
        streams.get_records(ShardIterator="not-an-iterator-" * 2)


def test_the_worker_s_shard_registry_lists_a_dynamodb_stream_s_open_shards(
    local_stack: LocalStack,
    table: tuple[str, str],
    front: tuple[StreamsFront, Any],
    fresh_database: Callable[..., AbstractContextManager[str]],
) -> None:
    """``ddbcdc worker``'s registry on a DynamoDB stream: DescribeStream page by page (the
    front answers 100 shards a page), only the open shards, a rollover's children on the next
    round and its closed parents gone (not started, they are nobody's to wait for)."""
    name, arn = table
    served, streams = front
    write(local_stack, name, range(1, 5), "a")
    for _ in range(60):  # 122 shards: the open ones are on the second page
        newest = served.rollover(arn)
    mappings = load_mappings(Path(__file__).resolve().parents[2] / "schemas" / "tables")
    with fresh_database("t_front_shards", mappings=mappings) as url:
        engine = sa.create_engine(url)
        try:
            registry = ShardRegistry(engine, "app", [dynamodb_open_shards(streams, arn)])
            assert registry.refresh()
            assert _registered(engine) == set(newest)
            children = served.rollover(arn, split=True)
            assert registry.refresh()
            assert _registered(engine) == set(children) and len(children) == 4
        finally:
            engine.dispose()


def _registered(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(shard_progress.c.shard_id)).scalars()
        return set(rows)
