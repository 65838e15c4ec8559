"""Time to Live on the local stack: ``ddbcdc setup --ttl-attribute`` enables it, the bridge's
sweeper expires items as DynamoDB does and their REMOVEs reach Kinesis with the TTL service's
userIdentity; a user's delete, an item not yet expired and a TTL attribute that is not a
number are left as they are."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import pytest

from ddbcdc.aws import clients as aws
from ddbcdc.aws.provision import ProvisionOptions, set_up
from ddbcdc.decode.record import decode_record
from ddbcdc.local.stack import LocalStack


def _kinesis_records(kinesis: Any, stream: str, count: int, timeout: float = 60) -> list[Any]:
    shards = [s["ShardId"] for s in kinesis.list_shards(StreamName=stream)["Shards"]]
    iterators = {
        s: kinesis.get_shard_iterator(
            StreamName=stream, ShardId=s, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        for s in shards
    }
    found: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(found) < count:
        assert time.monotonic() < deadline, f"{len(found)} of {count} records arrived"
        for shard, iterator in iterators.items():
            answer = kinesis.get_records(ShardIterator=iterator)
            iterators[shard] = answer["NextShardIterator"]
            found += [json.loads(r["Data"]) for r in answer["Records"]]
        time.sleep(0.2)
    return found


def test_expired_items_are_removed_by_the_ttl_service(
    local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in local_stack.env.items():
        monkeypatch.setenv(key, value)  # the stack's credentials too
    ddb = aws.client("dynamodb", local_stack.settings())
    kinesis = aws.client("kinesis", local_stack.settings())
    name = f"ttl_{uuid.uuid4().hex[:8]}"
    options = ProvisionOptions(
        table=name, stream=name, shards=1, local=True, ttl_attribute="expires_at"
    )
    steps = set_up(ddb, kinesis, options).steps
    assert [str(s) for s in steps if s.resource == "ttl"] == [
        f"ttl {name}: enabled (attribute expires_at)"
    ]
    again = set_up(ddb, kinesis, options).steps
    assert [s.action for s in again if s.resource == "ttl"] == ["existed"]
    now = int(time.time())
    items = {
        1: {"expires_at": {"N": str(now - 10)}},  # expired
        2: {"expires_at": {"N": str(now - 1)}},  # expired
        3: {"expires_at": {"N": str(now + 3600)}},  # not yet
        4: {"expires_at": {"S": str(now - 10)}},  # not a number: never
        5: {},  # no TTL attribute: never
        6: {},  # a user deletes it
    }
    for userid, extra in items.items():
        ddb.put_item(TableName=name, Item={"userid": {"N": str(userid)}, **extra})
    ddb.delete_item(TableName=name, Key={"userid": {"N": "6"}})
    records = _kinesis_records(kinesis, name, len(items) + 3)  # 6 INSERTs, 3 REMOVEs
    removes = {
        int(r["dynamodb"]["Keys"]["userid"]["N"]): r for r in records if r["eventName"] == "REMOVE"
    }
    assert sorted(removes) == [1, 2, 6]
    service = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
    assert removes[1]["userIdentity"] == removes[2]["userIdentity"] == service
    assert removes[6]["userIdentity"] is None
    decoded = {
        k: decode_record(base64.b64encode(json.dumps(r).encode())) for k, r in removes.items()
    }
    assert [decoded[k].is_ttl_delete for k in (1, 2, 6)] == [True, True, False]
    left = ddb.scan(TableName=name, ConsistentRead=True)["Items"]
    assert sorted(int(i["userid"]["N"]) for i in left) == [3, 4, 5]
