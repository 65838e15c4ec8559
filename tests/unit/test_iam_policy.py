"""``ddbcdc iam-policy``: least-privilege policies per role, scoped to the configured ARNs."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import pytest

from ddbcdc.aws.iam import ROLES, PolicyTarget, policy_document, statements
from ddbcdc.commands import iam_policy
from ddbcdc.errors import ConfigurationError
from ddbcdc.settings import Settings

ACCOUNT = "123456789012"
STREAM_ARN = f"arn:aws:kinesis:eu-west-1:{ACCOUNT}:stream/orders-cdc"


@pytest.fixture(autouse=True)
def settings_from_this_test_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """No DDBCDC_* (or aliased) variable of the caller's shell reaches these Settings."""
    aliases = {
        "AWS_ARN",
        "AWS_KINESIS_STREAM",
        "AWS_ACCOUNT_ID",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
    }
    for name in list(os.environ):
        if name.startswith("DDBCDC_") or name in aliases:
            monkeypatch.delenv(name)


def target(**values: Any) -> PolicyTarget:
    base: dict[str, Any] = {
        "region": "eu-west-1",
        "account": ACCOUNT,
        "stream": "orders-cdc",
        "table": "orders",
        "application": "orders-app",
    }
    return PolicyTarget(**{**base, **values})


def by_sid(found: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {s["Sid"]: s for s in found}


def resources(statement: dict[str, Any]) -> list[str]:
    value = statement["Resource"]
    return value if isinstance(value, list) else [value]


def test_worker_fanout_registers_and_subscribes_on_its_consumer_only() -> None:
    found = by_sid(statements(target(), "worker"))
    assert found["KinesisStream"]["Action"] == [
        "kinesis:DescribeStreamSummary",
        "kinesis:ListShards",
        "kinesis:RegisterStreamConsumer",
    ]
    assert resources(found["KinesisStream"]) == [STREAM_ARN]
    assert found["KinesisFanOut"]["Action"] == [
        "kinesis:DescribeStreamConsumer",
        "kinesis:SubscribeToShard",
    ]
    assert resources(found["KinesisFanOut"]) == [f"{STREAM_ARN}/consumer/orders-app:*"]
    named = by_sid(statements(target(consumer_name="efo"), "worker"))
    assert resources(named["KinesisFanOut"]) == [f"{STREAM_ARN}/consumer/efo:*"]
    assert not any("GetRecords" in a for s in found.values() for a in s["Action"])


def test_worker_with_a_consumer_arn_registers_nothing() -> None:
    arn = f"{STREAM_ARN}/consumer/efo:1714521600"
    found = by_sid(statements(target(consumer_arn=arn), "worker"))
    assert found["KinesisShards"]["Action"] == ["kinesis:ListShards"]
    assert found["KinesisFanOut"]["Action"] == ["kinesis:SubscribeToShard"]
    assert resources(found["KinesisFanOut"]) == [arn]
    assert not any("Register" in a for s in found.values() for a in s["Action"])


def test_worker_polling_reads_the_stream_only() -> None:
    found = by_sid(statements(target(retrieval_mode="POLLING"), "worker"))
    assert found["KinesisPolling"]["Action"] == [
        "kinesis:GetRecords",
        "kinesis:GetShardIterator",
        "kinesis:ListShards",
    ]
    assert "KinesisFanOut" not in found


def test_worker_owns_the_three_kcl_tables_and_cloudwatch_only_when_enabled() -> None:
    found = by_sid(statements(target(), "worker"))
    table = f"arn:aws:dynamodb:eu-west-1:{ACCOUNT}:table/orders-app"
    assert resources(found["KclLeaseTable"]) == [table]
    assert "dynamodb:UpdateTable" in found["KclLeaseTable"]["Action"]
    assert resources(found["KclLeaseOwnerIndex"]) == [f"{table}/index/*"]
    assert found["KclLeaseOwnerIndex"]["Action"] == ["dynamodb:Query"]
    assert resources(found["KclWorkerMetricsAndCoordinatorState"]) == [
        f"{table}-WorkerMetricStats",
        f"{table}-CoordinatorState",
    ]
    assert "KclCloudWatchMetrics" not in found
    with_metrics = by_sid(statements(target(kcl_metrics=True), "worker"))
    assert with_metrics["KclCloudWatchMetrics"]["Action"] == ["cloudwatch:PutMetricData"]
    # nothing of the source table: the worker never reads DynamoDB's item data
    everything = json.dumps(list(found.values()))
    assert ':table/orders"' not in everything and "Scan" in everything


def test_setup_and_snapshot_are_scoped_to_the_table_stream_and_bucket() -> None:
    setup = by_sid(statements(target(), "setup"))
    table = f"arn:aws:dynamodb:eu-west-1:{ACCOUNT}:table/orders"
    assert resources(setup["SetupTable"]) == [table]
    assert "dynamodb:EnableKinesisStreamingDestination" in setup["SetupTable"]["Action"]
    assert resources(setup["SetupStream"]) == [STREAM_ARN]
    assert setup["SetupKinesisReplicationRole"]["Condition"] == {
        "StringEquals": {"iam:AWSServiceName": "kinesisreplication.dynamodb.amazonaws.com"}
    }
    snapshot = by_sid(statements(target(), "snapshot"))
    assert list(snapshot) == ["SnapshotRead"]
    assert snapshot["SnapshotRead"]["Action"] == [
        "dynamodb:DescribeTable",
        "dynamodb:GetItem",
        "dynamodb:Scan",
    ]
    exported = by_sid(statements(target(export_bucket="exp", export_prefix="cdc/"), "snapshot"))
    assert resources(exported["SnapshotExportObjects"]) == ["arn:aws:s3:::exp/cdc/*"]
    assert exported["SnapshotExportList"]["Condition"] == {"StringLike": {"s3:prefix": ["cdc/*"]}}
    assert resources(exported["SnapshotExportStatus"]) == [f"{table}/export/*"]


def test_all_roles_in_one_document_with_unique_statement_ids() -> None:
    document = policy_document(target(kcl_metrics=True, export_bucket="exp"), ROLES)
    assert document["Version"] == "2012-10-17"
    sids = [s["Sid"] for s in document["Statement"]]
    assert len(sids) == len(set(sids))
    assert all(s["Effect"] == "Allow" and s["Action"] for s in document["Statement"])
    stars = {s["Sid"] for s in document["Statement"] if "*" in resources(s)}
    assert stars == {"KclCloudWatchMetrics"}  # PutMetricData has no resource-level permissions


def test_partitions_follow_the_region() -> None:
    assert target(region="cn-north-1").stream_arn.startswith("arn:aws-cn:kinesis:cn-north-1:")
    assert target(region="us-gov-west-1").partition == "aws-us-gov"


@pytest.mark.parametrize(
    ("values", "message"),
    [({"account": "12345"}, "12-digit"), ({"stream": "a*"}, "cannot be part of an ARN")],
)
def test_bad_targets_are_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        target(**values)


def args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    iam_policy.register(parser.add_subparsers())
    return parser.parse_args(["iam-policy", *argv])


def test_the_command_scopes_to_settings_and_flags() -> None:
    settings = Settings(stream_arn=STREAM_ARN, application_name="app", source_table="orders")
    found = iam_policy.target_from(args(), settings)
    assert (found.region, found.account, found.stream) == ("eu-west-1", ACCOUNT, "orders-cdc")
    assert found.retrieval_mode == "FANOUT"
    local = Settings(stream_name="s", kinesis_endpoint="http://127.0.0.1:4568")
    found = iam_policy.target_from(args("--account", ACCOUNT), local)
    assert found.retrieval_mode == "POLLING"
    assert iam_policy.target_from(args("--account", ACCOUNT, "--retrieval-mode", "fanout"), local)
    with pytest.raises(ConfigurationError, match="pass --account"):
        iam_policy.target_from(args(), Settings(stream_name="s"))
    with pytest.raises(ConfigurationError, match="not 999999999999"):
        iam_policy.target_from(args("--account", "999999999999"), settings)


def test_the_command_prints_a_policy_document(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in (
        "DDBCDC_KINESIS_ENDPOINT",
        "DDBCDC_DYNAMODB_ENDPOINT",
        "DDBCDC_CLOUDWATCH_ENDPOINT",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DDBCDC_STREAM_ARN", STREAM_ARN)
    parsed = args("--for", "all")
    assert parsed.func(parsed) == 0
    out, err = capsys.readouterr()
    document = json.loads(out)
    assert {s["Sid"] for s in document["Statement"]} >= {
        "KclLeaseTable",
        "SetupTable",
        "SnapshotRead",
    }
    assert "account 123456789012" in err and "no --export-bucket" in err


DDB_STREAM_ARN = f"arn:aws:dynamodb:eu-west-1:{ACCOUNT}:table/orders/stream/2025-11-24T16:00:00.000"


def test_a_dynamodb_streams_worker_reads_every_stream_of_its_table_and_nothing_of_kinesis() -> None:
    found = by_sid(statements(target(stream="", source="dynamodb-streams"), "worker"))
    assert found["DynamoDBStreamRead"]["Action"] == [
        "dynamodb:DescribeStream",
        "dynamodb:GetRecords",
        "dynamodb:GetShardIterator",
    ]
    assert resources(found["DynamoDBStreamRead"]) == [
        f"arn:aws:dynamodb:eu-west-1:{ACCOUNT}:table/orders/stream/*"
    ]
    assert found["DynamoDBStreamOfTable"]["Action"] == ["dynamodb:DescribeTable"]
    assert resources(found["DynamoDBStreamOfTable"]) == [
        f"arn:aws:dynamodb:eu-west-1:{ACCOUNT}:table/orders"
    ]
    assert "KclLeaseTable" in found
    actions = [a for s in found.values() for a in s["Action"]]
    assert not [a for a in actions if a.startswith("kinesis:")]
    setup = by_sid(statements(target(stream="", source="dynamodb-streams"), "setup"))
    assert list(setup) == ["SetupTableAndStream"]
    assert "dynamodb:UpdateTable" in setup["SetupTableAndStream"]["Action"]
    assert "dynamodb:UpdateTimeToLive" in setup["SetupTableAndStream"]["Action"]  # --ttl-attribute


def test_the_command_scopes_a_dynamodb_stream_from_its_arn_or_the_table() -> None:
    from_arn = Settings(source="dynamodb-streams", stream_arn=DDB_STREAM_ARN)
    found = iam_policy.target_from(args(), from_arn)
    assert (found.region, found.account, found.table) == ("eu-west-1", ACCOUNT, "orders")
    assert found.source == "dynamodb-streams" and found.retrieval_mode == "POLLING"
    by_table = Settings(source="dynamodb-streams", source_table="items", aws_region="ap-south-1")
    found = iam_policy.target_from(args("--account", ACCOUNT), by_table)
    assert found.table_streams_arn == f"arn:aws:dynamodb:ap-south-1:{ACCOUNT}:table/items/stream/*"
    with pytest.raises(ConfigurationError, match="pass --account"):
        iam_policy.target_from(args(), by_table)
