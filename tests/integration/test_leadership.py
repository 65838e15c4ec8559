"""The leader lock of a worker's earlier run, against DynamoDB (moto)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from ddbcdc.aws import clients as aws
from ddbcdc.local.stack import LocalStack
from ddbcdc.worker.leadership import release_stale_leader_lock


def coordinator_table(client: Any, application: str, owner: str) -> str:
    """The KCL's CoordinatorState table with a leader lock held by ``owner``."""
    table = f"{application}-CoordinatorState"
    client.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "key", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "key", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    client.put_item(
        TableName=table,
        Item={
            "key": {"S": "Leader"},
            "ownerName": {"S": owner},
            "recordVersionNumber": {"S": str(uuid.uuid4())},
            "leaseDuration": {"S": "120000"},
        },
    )
    return table


def test_only_a_lock_naming_this_worker_id_is_released(
    local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, local_stack.env[name])
    client = aws.client("dynamodb", local_stack.settings())
    application = f"lead-{uuid.uuid4().hex[:6]}"
    assert not release_stale_leader_lock(client, application, "a")  # no table yet
    table = coordinator_table(client, application, owner="a")
    leader = {"key": {"S": "Leader"}}

    assert not release_stale_leader_lock(client, application, "b")
    assert client.get_item(TableName=table, Key=leader)["Item"]["ownerName"]["S"] == "a"

    assert release_stale_leader_lock(client, application, "a")
    assert "Item" not in client.get_item(TableName=table, Key=leader)
    assert not release_stale_leader_lock(client, application, "a")  # nothing left to release
