"""The local stack: real emulators on loopback, what the KCL needs from them, clean stops."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from ddbcdc.local.processes import pid_alive
from ddbcdc.local.stack import LocalStack, StackInfo

CONTRACT_ENV = {
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_REGION",
    "DDBCDC_DYNAMODB_ENDPOINT",
    "DDBCDC_DYNAMODBSTREAMS_ENDPOINT",
    "DDBCDC_CLOUDWATCH_ENDPOINT",
    "DDBCDC_S3_ENDPOINT",
    "DDBCDC_KINESIS_ENDPOINT",
    "DATABASE_URL",
}


def test_env_names_and_loopback_endpoints(local_stack: LocalStack) -> None:
    env = local_stack.env
    assert set(env) >= CONTRACT_ENV
    assert env["AWS_ACCESS_KEY_ID"] == "testing"
    assert env["DATABASE_URL"] == local_stack.database_url
    for name in CONTRACT_ENV:
        if name.endswith("_ENDPOINT"):
            assert env[name].startswith("http://127.0.0.1:"), name
    settings = local_stack.settings()
    assert settings.kinesis_endpoint == local_stack.kinesis_endpoint
    assert StackInfo.from_json(local_stack.info.to_json()) == local_stack.info


def test_moto_serves_what_the_kcl_lease_table_needs(
    local_stack: LocalStack, emulator_client: Callable[[str, str], Any]
) -> None:
    ddb = emulator_client("dynamodb", local_stack.dynamodb_endpoint)
    ddb.create_table(
        TableName="leases-sanity",
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "leaseKey", "KeyType": "HASH"}],
        AttributeDefinitions=[
            {"AttributeName": "leaseKey", "AttributeType": "S"},
            {"AttributeName": "leaseOwner", "AttributeType": "S"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "LeaseOwnerToLeaseKeyIndex",
                "KeySchema": [
                    {"AttributeName": "leaseOwner", "KeyType": "HASH"},
                    {"AttributeName": "leaseKey", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
    )
    table = ddb.describe_table(TableName="leases-sanity")["Table"]
    assert table["TableStatus"] == "ACTIVE"
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert table["GlobalSecondaryIndexes"][0]["IndexStatus"] == "ACTIVE"
    assert "leases-sanity" in ddb.list_tables()["TableNames"]
    item = {"leaseKey": {"S": "shard-0"}, "leaseOwner": {"S": "w1"}, "counter": {"N": "1"}}
    ddb.put_item(
        TableName="leases-sanity", Item=item, ConditionExpression="attribute_not_exists(leaseKey)"
    )
    with pytest.raises(ClientError, match="ConditionalCheckFailed"):
        ddb.put_item(
            TableName="leases-sanity",
            Item=item,
            ConditionExpression="attribute_not_exists(leaseKey)",
        )
    ddb.update_item(
        TableName="leases-sanity",
        Key={"leaseKey": {"S": "shard-0"}},
        UpdateExpression="SET leaseOwner = :new, #c = #c + :one",
        ConditionExpression="leaseOwner = :old",
        ExpressionAttributeNames={"#c": "counter"},
        ExpressionAttributeValues={":new": {"S": "w2"}, ":old": {"S": "w1"}, ":one": {"N": "1"}},
    )
    with pytest.raises(ClientError, match="ConditionalCheckFailed"):
        ddb.update_item(
            TableName="leases-sanity",
            Key={"leaseKey": {"S": "shard-0"}},
            UpdateExpression="SET leaseOwner = :new",
            ConditionExpression="leaseOwner = :old",
            ExpressionAttributeValues={":new": {"S": "w3"}, ":old": {"S": "w1"}},
        )
    by_owner = ddb.query(
        TableName="leases-sanity",
        IndexName="LeaseOwnerToLeaseKeyIndex",
        KeyConditionExpression="leaseOwner = :o",
        ExpressionAttributeValues={":o": {"S": "w2"}},
    )["Items"]
    assert by_owner == [{"leaseKey": {"S": "shard-0"}, "leaseOwner": {"S": "w2"}}]
    scanned = ddb.scan(TableName="leases-sanity", IndexName="LeaseOwnerToLeaseKeyIndex")
    assert scanned["Count"] == 1
    got = ddb.get_item(TableName="leases-sanity", Key={"leaseKey": {"S": "shard-0"}})
    assert got["Item"]["counter"] == {"N": "2"}
    cloudwatch = emulator_client("cloudwatch", local_stack.info.cloudwatch_endpoint)
    cloudwatch.put_metric_data(
        Namespace="ddbcdc-sanity", MetricData=[{"MetricName": "m", "Value": 1.0}]
    )


def test_kinesis_local_round_trip_with_boto3(
    local_stack: LocalStack, emulator_client: Callable[[str, str], Any]
) -> None:
    kinesis = emulator_client("kinesis", local_stack.kinesis_endpoint)
    kinesis.create_stream(StreamName="sanity", ShardCount=2)
    deadline = time.monotonic() + 10
    while (
        kinesis.describe_stream_summary(StreamName="sanity")["StreamDescriptionSummary"][
            "StreamStatus"
        ]
        != "ACTIVE"
    ):
        assert time.monotonic() < deadline, "stream did not become ACTIVE"
        time.sleep(0.05)
    kinesis.put_record(StreamName="sanity", Data=b"one", PartitionKey="a")
    answer = kinesis.put_records(
        StreamName="sanity",
        Records=[{"Data": f"r{i}".encode(), "PartitionKey": str(i)} for i in range(20)],
    )
    assert answer["FailedRecordCount"] == 0
    seen: list[bytes] = []
    for shard in kinesis.list_shards(StreamName="sanity")["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName="sanity", ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        seen += [r["Data"] for r in kinesis.get_records(ShardIterator=iterator)["Records"]]
    assert sorted(seen) == sorted([b"one"] + [f"r{i}".encode() for i in range(20)])


def test_kinesis_plain_port_speaks_h2c(local_stack: LocalStack) -> None:
    """HTTP/2 with prior knowledge, as the KCL's Java SDK uses for http:// endpoints."""
    port = int(local_stack.kinesis_endpoint.rsplit(":", 1)[1])
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    empty_settings = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(preface + empty_settings)
        header = b""
        while len(header) < 9:
            chunk = sock.recv(9 - len(header))
            assert chunk, "connection closed before an HTTP/2 frame"
            header += chunk
    assert header[3] == 0x4, "the first frame of an HTTP/2 server is SETTINGS"


def _ddbcdc(cwd: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ddbcdc.cli", "local", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


@pytest.mark.slow
def test_cli_up_env_status_down_leaves_nothing_behind(tmp_path: Path, postgres_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": postgres_url}
    up = _ddbcdc(tmp_path, "up", env=env)
    assert up.returncode == 0, up.stderr
    try:
        info = StackInfo.from_json((tmp_path / ".local" / "stack.json").read_bytes())
        assert set(info.pids) == {"supervisor", "moto", "kinesis", "bridge"}
        assert all(pid_alive(pid) for pid in info.pids.values())
        exports = _ddbcdc(tmp_path, "env", env=env).stdout
        assert f"export DDBCDC_KINESIS_ENDPOINT={info.kinesis_endpoint}" in exports
        assert up.stdout == exports
        assert "already up" in _ddbcdc(tmp_path, "up", env=env).stderr
        assert _ddbcdc(tmp_path, "status", env=env).returncode == 0
        assert info.database_url == postgres_url
    finally:
        down = _ddbcdc(tmp_path, "down", env=env)
    assert down.returncode == 0, down.stderr
    assert not any(pid_alive(pid) for pid in info.pids.values())
    assert not (tmp_path / ".local" / "stack.json").exists()
    assert _ddbcdc(tmp_path, "env", env=env).returncode == 1


def test_context_manager_stops_every_process() -> None:
    with LocalStack(postgres=False, bridge=False) as stack:
        pids = dict(stack.info.pids)
        assert all(pid_alive(pid) for pid in pids.values())
        log_dir = Path(stack.info.log_dir)
    assert not any(pid_alive(pid) for pid in pids.values())
    assert not log_dir.exists()


@pytest.mark.slow
def test_cli_up_with_dynamodb_streams_runs_the_front_instead_of_kinesis(
    tmp_path: Path, postgres_url: str
) -> None:
    env = {**os.environ, "DATABASE_URL": postgres_url}
    up = _ddbcdc(tmp_path, "up", "--source", "dynamodb-streams", "--shards", "3", env=env)
    assert up.returncode == 0, up.stderr
    try:
        info = StackInfo.from_json((tmp_path / ".local" / "stack.json").read_bytes())
        assert set(info.pids) == {"supervisor", "moto", "front"}
        exports = _ddbcdc(tmp_path, "env", env=env).stdout
        assert "export DDBCDC_SOURCE=dynamodb-streams" in exports
        assert f"export DDBCDC_DYNAMODBSTREAMS_ENDPOINT={info.streams_endpoint}" in exports
        assert "DDBCDC_KINESIS_ENDPOINT" not in exports
        assert info.streams_endpoint != info.moto_endpoint
        assert info.settings().source == "dynamodb-streams"
    finally:
        down = _ddbcdc(tmp_path, "down", env=env)
    assert down.returncode == 0, down.stderr
    assert not any(pid_alive(pid) for pid in info.pids.values())


def test_state_naming_a_reused_pid_is_stale_and_its_process_left_alone(tmp_path: Path) -> None:
    """After a crash or a reboot, .local names pids another process may have now: local
    status, up and down must neither count nor signal it."""
    state = tmp_path / ".local"
    state.mkdir()
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        info = StackInfo("us-east-1", "http://127.0.0.1:9", "", "", "postgresql://x", str(state))
        info.pids.update(supervisor=stranger.pid, moto=stranger.pid)
        (state / "stack.json").write_bytes(info.to_json())
        (state / "supervisor.pid").write_text(f"{stranger.pid}\n")
        past = time.time() - 60  # written before the stranger started
        for name in ("stack.json", "supervisor.pid"):
            os.utime(state / name, (past, past))
        status = _ddbcdc(tmp_path, "status", env=dict(os.environ))
        assert status.returncode == 1
        assert "NOT RUNNING" in status.stdout and " running" not in status.stdout
        assert _ddbcdc(tmp_path, "down", env=dict(os.environ)).returncode == 0
        assert stranger.poll() is None, "local down signalled a process not of the stack"
        assert not (state / "supervisor.pid").exists()
    finally:
        stranger.kill()
        stranger.wait()


def test_up_with_another_source_than_the_running_stack_is_refused(tmp_path: Path) -> None:
    state = tmp_path / ".local"
    state.mkdir()
    supervisor = subprocess.Popen(["sleep", "60"])  # stands in for a running stack's
    try:
        info = StackInfo(
            "us-east-1", "http://127.0.0.1:9", "", "", "postgresql://x", str(state),
            pids={"supervisor": supervisor.pid}, source="dynamodb-streams",
            streams_endpoint="http://127.0.0.1:10",
        )  # fmt: skip
        (state / "stack.json").write_bytes(info.to_json())
        (state / "supervisor.pid").write_text(f"{supervisor.pid}\n")
        up = _ddbcdc(tmp_path, "up", env=dict(os.environ))
        assert up.returncode == 2
        assert "--source dynamodb-streams is up here" in up.stderr and not up.stdout
        again = _ddbcdc(tmp_path, "up", "--source", "dynamodb-streams", env=dict(os.environ))
        assert again.returncode == 0 and "DDBCDC_SOURCE=dynamodb-streams" in again.stdout
        status = _ddbcdc(tmp_path, "status", env=dict(os.environ)).stdout
        assert "front       http://127.0.0.1:10" in status and "kinesis" not in status
    finally:
        supervisor.kill()
        supervisor.wait()


@pytest.mark.parametrize("shards", ["0", "-1"])
def test_up_with_no_shards_per_stream_is_refused_before_starting(
    tmp_path: Path, shards: str
) -> None:
    """A front with no shards would fail every DescribeStream: `up` refuses it in one line."""
    up = _ddbcdc(
        tmp_path, "up", "--source", "dynamodb-streams", "--shards", shards, env=dict(os.environ)
    )
    try:
        assert up.returncode == 2, up.stderr
        assert up.stderr.strip().splitlines()[-1].endswith(f"must be at least 1, not {shards}")
        assert "Traceback" not in up.stderr
        assert not (tmp_path / ".local" / "stack.json").exists()
    finally:
        _ddbcdc(tmp_path, "down", env=dict(os.environ))


def test_up_logs_no_password_nor_secret_key(tmp_path: Path) -> None:
    """A --database-url password and the AWS secret key stay out of the stack's logs."""
    url = "postgresql+psycopg://someone:pg-s3cret@127.0.0.1:9/ddbcdc"
    env = dict(os.environ)
    up = _ddbcdc(tmp_path, "up", "--source", "dynamodb-streams", "--database-url", url, env=env)
    try:
        assert up.returncode == 0, up.stderr
        logs = {p.name: p.read_text() for p in (tmp_path / ".local").glob("*.log")}
        assert "local stack ready" in logs["supervisor.log"]
        assert "someone:***@127.0.0.1:9" in logs["supervisor.log"]
        for name, text in logs.items():
            assert "pg-s3cret" not in text, name
            assert "AWS_SECRET_ACCESS_KEY" not in text, name
    finally:
        _ddbcdc(tmp_path, "down", env=env)
