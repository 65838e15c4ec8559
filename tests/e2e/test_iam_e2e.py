"""The worker's DynamoDB and CloudWatch calls under exactly ``ddbcdc iam-policy --for worker``.

A moto server of this module's own enforces IAM (``iam_moto``, ``tests/iam_moto.py``:
resources and action names as AWS evaluates them, every decision logged). An IAM user gets
the generated policy and nothing else; the real ``ddbcdc worker`` (KCL daemon and shard
processors) runs with that user's keys, its lease, worker-metrics and coordinator-state
tables and the KCL's CloudWatch metrics on that moto, Kinesis on the session's kinesis-local
(which checks no IAM at all). A second worker under the policy less one action it needs
refuses to start, naming the call AWS denied.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from ddbcdc.aws import clients as aws
from ddbcdc.local.stack import LocalStack
from ddbcdc.schema.mapping import load_mappings
from iam_fixtures import ACCOUNT, IamMoto, enforce, user_with_policy
from worker_runs import (
    MAPPINGS_DIR,
    WorkerRun,
    applied_userids,
    create_stream,
    progress,
    put_changes,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TIMEOUT_S = 180.0


def generated_policy(env: dict[str, str], *drop: str) -> str:
    """``ddbcdc iam-policy --for worker`` for ``env``, less the actions ``drop``."""
    result = subprocess.run(
        [sys.executable, "-m", "ddbcdc.cli", "iam-policy", "--for", "worker"],
        env={**env, "DDBCDC_AWS_ACCOUNT_ID": ACCOUNT},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    policy = json.loads(result.stdout)
    for statement in policy["Statement"]:
        statement["Action"] = [a for a in statement["Action"] if a not in drop]
    return json.dumps(policy)


@pytest.fixture
def database(fresh_database: Callable[..., AbstractContextManager[str]]) -> Iterator[str]:
    with fresh_database("t_iam", mappings=load_mappings(MAPPINGS_DIR)) as url:
        yield url


@pytest.fixture
def stream(local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        monkeypatch.setenv(name, local_stack.env[name])
    name = f"ddbcdc-iam-{uuid.uuid4().hex[:6]}"
    create_stream(aws.client("kinesis", local_stack.settings()), name)
    yield name


def worker_env(
    stack: LocalStack, moto: IamMoto, database: str, stream: str, application: str
) -> dict[str, str]:
    return stack.worker_env(
        os.environ,
        DATABASE_URL=database,
        DDBCDC_STREAM_NAME=stream,
        DDBCDC_APPLICATION_NAME=application,
        DDBCDC_MAPPINGS_DIR=str(MAPPINGS_DIR),
        DDBCDC_DYNAMODB_ENDPOINT=moto.url,
        DDBCDC_DYNAMODBSTREAMS_ENDPOINT=moto.url,
        DDBCDC_CLOUDWATCH_ENDPOINT=moto.url,
        DDBCDC_KCL_METRICS_LEVEL="SUMMARY",
        DDBCDC_FAILOVER_TIME_MS="3000",
        DDBCDC_SHUTDOWN_GRACE_MS="10000",
        DDBCDC_IDLE_TIME_BETWEEN_READS_MS="200",
    )


def run_as(env: dict[str, str], keys: dict[str, str], log_path: Path) -> WorkerRun:
    credentials = {"AWS_ACCESS_KEY_ID": keys["AccessKeyId"]}
    credentials["AWS_SECRET_ACCESS_KEY"] = keys["SecretAccessKey"]
    return WorkerRun({**env, **credentials}, log_path)


def test_the_worker_runs_under_exactly_its_generated_policy(
    local_stack: LocalStack, iam_moto: IamMoto, database: str, stream: str, tmp_path: Path
) -> None:
    application = f"iam-{uuid.uuid4().hex[:6]}"
    env = worker_env(local_stack, iam_moto, database, stream, application)
    keys = user_with_policy(iam_moto, generated_policy(env))
    observer = user_with_policy(
        iam_moto,
        json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Action": "cloudwatch:ListMetrics", "Resource": "*"}
                ],
            }
        ),
    )
    enforce(iam_moto, 0)
    try:
        dynamodb = iam_moto.client("dynamodb", keys)
        with pytest.raises(dynamodb.exceptions.ClientError, match="AccessDenied"):
            dynamodb.list_tables()  # not in the policy: the user can do nothing else
        last = put_changes(aws.client("kinesis", local_stack.settings()), stream, range(1, 41))
        cloudwatch = iam_moto.client("cloudwatch", observer)
        worker = run_as(env, keys, tmp_path / "worker.log")
        try:
            worker.wait_for(
                "every shard to reach its last record",
                lambda: progress(database, application) == last,
                TIMEOUT_S,
            )
            worker.wait_for(
                "the KCL's metrics in CloudWatch",
                lambda: bool(cloudwatch.list_metrics(Namespace=application)["Metrics"]),
                TIMEOUT_S,
            )
        finally:
            code = worker.stop()
    finally:
        enforce(iam_moto, float("inf"))
    assert code == 0, worker.tail()
    assert applied_userids(database) == set(range(1, 41))
    decisions = iam_moto.decisions(keys["AccessKeyId"])
    denied = [d for d in decisions if d[0] == "denied" and d[1] != "dynamodb:ListTables"]
    assert denied == []
    used = {action for _, action, _ in decisions}
    assert {"dynamodb:CreateTable", "dynamodb:UpdateItem", "cloudwatch:PutMetricData"} <= used
    tables = {resource.rsplit("/", 1)[-1] for _, _, resource in decisions if "/" in resource}
    assert {
        application,
        f"{application}-WorkerMetricStats",
        f"{application}-CoordinatorState",
    } <= tables


def test_a_policy_missing_an_action_the_worker_needs_stops_it(
    local_stack: LocalStack, iam_moto: IamMoto, database: str, stream: str, tmp_path: Path
) -> None:
    application = f"iam-{uuid.uuid4().hex[:6]}"
    env = worker_env(local_stack, iam_moto, database, stream, application)
    keys = user_with_policy(iam_moto, generated_policy(env, "dynamodb:GetItem"))
    coordinator = f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/{application}-CoordinatorState"
    enforce(iam_moto, 0)
    try:
        put_changes(aws.client("kinesis", local_stack.settings()), stream, range(1, 21))
        worker = run_as(env, keys, tmp_path / "worker.log")
        try:
            # the worker reads the KCL's coordinator state as it starts: denied, it refuses
            code = worker.proc.wait(timeout=TIMEOUT_S)
        finally:
            worker.stop()
    finally:
        enforce(iam_moto, float("inf"))
    assert code == 2, worker.tail()
    assert ("denied", "dynamodb:GetItem", coordinator) in iam_moto.decisions(keys["AccessKeyId"])
    last = worker.log().splitlines()[-1]
    assert last.startswith(f"ddbcdc worker: DynamoDB GetItem on table {application}-Coordinator")
    assert "denied" in last and "Traceback" not in worker.log()
    assert progress(database, application) == {}
    assert applied_userids(database) == set()


def test_a_dynamodb_streams_worker_runs_under_exactly_its_generated_policy(
    local_stack: LocalStack, iam_moto: IamMoto, database: str, tmp_path: Path
) -> None:
    """The same with ``DDBCDC_SOURCE=dynamodb-streams``: the worker reads the table's own
    stream on the enforcing moto (one shard, as moto serves it) through the adapter."""
    application = f"iam-{uuid.uuid4().hex[:6]}"
    env = worker_env(local_stack, iam_moto, database, "", application)
    del env["DDBCDC_STREAM_NAME"]
    env["DDBCDC_SOURCE"] = "dynamodb-streams"
    env["DDBCDC_CACHE_DIR"] = str(Path.home() / ".cache" / "ddbcdc")
    keys = user_with_policy(iam_moto, generated_policy(env))
    admin = iam_moto.client("dynamodb", {"AccessKeyId": "setup", "SecretAccessKey": "setup"})
    admin.create_table(
        TableName="customers",
        KeySchema=[{"AttributeName": "userid", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "userid", "AttributeType": "N"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    stream = admin.describe_table(TableName="customers")["Table"]["LatestStreamArn"]
    for userid in range(1, 41):
        admin.put_item(
            TableName="customers",
            Item={"userid": {"N": str(userid)}, "first_name": {"S": f"n{userid}"}},
        )
    enforce(iam_moto, 0)
    try:
        worker = run_as(env, keys, tmp_path / "worker.log")
        try:
            worker.wait_for(
                "every item in PostgreSQL",
                lambda: applied_userids(database) == set(range(1, 41)),
                TIMEOUT_S + 60,
            )
        finally:
            code = worker.stop()
    finally:
        enforce(iam_moto, float("inf"))
        admin.delete_table(TableName="customers")
    assert code == 0, worker.tail()
    decisions = iam_moto.decisions(keys["AccessKeyId"])
    assert [d for d in decisions if d[0] == "denied"] == []
    used = {(action, resource) for _, action, resource in decisions}
    for action in ("dynamodb:DescribeStream", "dynamodb:GetShardIterator", "dynamodb:GetRecords"):
        assert (action, stream) in used
    table = f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/customers"
    assert ("dynamodb:DescribeTable", table) in used
    assert not any(action.startswith("kinesis:") for action, _ in used)


@pytest.mark.parametrize("action", ["dynamodb:GetShardIterator", "dynamodb:GetRecords"])
def test_a_dynamodb_streams_worker_that_may_not_read_the_stream_refuses_to_start(
    local_stack: LocalStack, iam_moto: IamMoto, database: str, tmp_path: Path, action: str
) -> None:
    """Without the read of its stream the adapter would retry forever: the worker refuses
    at start (before the KCL daemon), naming the call AWS denied."""
    env = worker_env(local_stack, iam_moto, database, "", f"iam-{uuid.uuid4().hex[:6]}")
    del env["DDBCDC_STREAM_NAME"]
    env["DDBCDC_SOURCE"] = "dynamodb-streams"
    keys = user_with_policy(iam_moto, generated_policy(env, action))
    admin = iam_moto.client("dynamodb", {"AccessKeyId": "setup", "SecretAccessKey": "setup"})
    admin.create_table(
        TableName="customers",
        KeySchema=[{"AttributeName": "userid", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "userid", "AttributeType": "N"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    stream = admin.describe_table(TableName="customers")["Table"]["LatestStreamArn"]
    admin.put_item(TableName="customers", Item={"userid": {"N": "1"}})
    enforce(iam_moto, 0)
    try:
        worker = run_as(env, keys, tmp_path / "worker.log")
        try:
            code = worker.proc.wait(timeout=60)
        finally:
            worker.stop()
    finally:
        enforce(iam_moto, float("inf"))
        admin.delete_table(TableName="customers")
    assert code == 2, worker.tail()
    assert ("denied", action, stream) in iam_moto.decisions(keys["AccessKeyId"])
    last = worker.log().splitlines()[-1]
    operation = action.split(":")[1]
    assert last.startswith(f"ddbcdc worker: DynamoDB Streams {operation} "), last
    assert "denied" in last
    assert "Traceback" not in worker.log()
