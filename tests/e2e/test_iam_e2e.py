"""The worker's DynamoDB and CloudWatch calls under exactly ``ddbcdc iam-policy --for worker``.

A moto server of this module's own enforces IAM (``tests/iam_moto.py``: resources and action
names as AWS evaluates them, every decision logged). An IAM user gets the generated policy
and nothing else; the real ``ddbcdc worker`` (KCL daemon and shard processors) runs with that
user's keys, its lease, worker-metrics and coordinator-state tables and the KCL's CloudWatch
metrics on that moto, Kinesis on the session's kinesis-local (which checks no IAM at all).
A second worker under the policy less one action it needs shows the check bites.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import boto3
import pytest

from ddbcdc.aws import clients as aws
from ddbcdc.local.moto import wait_for_moto
from ddbcdc.local.postgres import free_port
from ddbcdc.local.processes import ManagedProcess
from ddbcdc.local.stack import LocalStack
from ddbcdc.schema.mapping import load_mappings
from worker_runs import (
    MAPPINGS_DIR,
    ROOT,
    WorkerRun,
    applied_userids,
    create_stream,
    progress,
    put_changes,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ACCOUNT = "123456789012"  # moto's account
TIMEOUT_S = 180.0


class IamMoto:
    """The enforcing moto: its URL, its log, and clients with given keys."""

    def __init__(self, process: ManagedProcess, url: str) -> None:
        self.process, self.url = process, url

    def client(self, service: str, keys: dict[str, str]) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=keys["AccessKeyId"],
            aws_secret_access_key=keys["SecretAccessKey"],
        )

    def decisions(self, key: str) -> list[tuple[str, str, str]]:
        """(allowed|denied, action, resource) of every enforced request made with ``key``."""
        found = []
        for line in self.process.log_path.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) == 5 and parts[0] == "ddbcdc-iam" and parts[2] == key:
                found.append((parts[1], parts[3], parts[4]))
        return found


@pytest.fixture(scope="module")
def iam_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IamMoto]:
    port = free_port()
    log_path = tmp_path_factory.mktemp("iam-moto") / "moto.log"
    argv = [sys.executable, str(ROOT / "tests" / "iam_moto.py"), "-H", "127.0.0.1"]
    process = ManagedProcess("iam-moto", [*argv, "-p", str(port)], log_path=log_path).start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_moto(process, url)
        yield IamMoto(process, url)
    finally:
        process.stop()


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


def user_with_policy(moto: IamMoto, policy: str) -> dict[str, str]:
    """A new IAM user with ``policy`` as its only permissions, and its access key.

    Runs while moto still lets requests through unauthenticated; :func:`enforce` ends that.
    """
    iam = moto.client("iam", {"AccessKeyId": "setup", "SecretAccessKey": "setup"})
    name = f"ddbcdc-worker-{uuid.uuid4().hex[:6]}"
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="ddbcdc-worker", PolicyDocument=policy)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {"AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"]}


def enforce(moto: IamMoto, unauthenticated: float) -> None:
    """From now on moto checks every request (after ``unauthenticated`` more, or inf)."""
    request = urllib.request.Request(
        f"{moto.url}/moto-api/reset-auth",
        data=str(unauthenticated).encode(),
        headers={"Content-Type": "text/plain"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


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
            # the KCL cannot read its coordinator state, so it never starts a shard
            worker.wait_for(
                "moto to deny the KCL's GetItem and the KCL to fail on it",
                lambda: (
                    ("denied", "dynamodb:GetItem", coordinator)
                    in iam_moto.decisions(keys["AccessKeyId"])
                    and "Status Code: 403" in worker.log()
                ),
                TIMEOUT_S,
            )
            assert "shard processor started" not in worker.log()
            assert progress(database, application) == {}
            assert applied_userids(database) == set()
        finally:
            worker.stop()
    finally:
        enforce(iam_moto, float("inf"))
