"""The commands with ``DDBCDC_SOURCE=dynamodb-streams``, on a DynamoDB Streams local stack
(moto and the DynamoDB Streams front, no Kinesis): ``ddbcdc setup`` enables the table's own
stream, ``ddbcdc worker --print-properties`` finds it from the table, ``ddbcdc snapshot``
checks its preconditions on that stream, and ``verify --repair`` refuses a margin the stream's
whole seconds would eat."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
import sqlalchemy as sa

from backfill_support import BackfillTable, backfill_table, rich_item
from ddbcdc.cli import main
from ddbcdc.local.stack import LocalStack
from ddbcdc.verify.compare import compare


@pytest.fixture(scope="module")
def streams_stack(postgres_url: str) -> Iterator[LocalStack]:
    with LocalStack(database_url=postgres_url, source="dynamodb-streams", shards=2) as stack:
        yield stack


@pytest.fixture
def table(
    streams_stack: LocalStack,
    fresh_database: Callable[..., AbstractContextManager[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[BackfillTable]:
    for name in ("DDBCDC_STREAM_NAME", "DDBCDC_STREAM_ARN", "AWS_KINESIS_STREAM", "AWS_ARN"):
        monkeypatch.delenv(name, raising=False)
    with backfill_table(streams_stack, fresh_database, tmp_path, monkeypatch=monkeypatch) as t:
        assert t.env["DDBCDC_SOURCE"] == "dynamodb-streams"
        yield t


def stream_of(table: BackfillTable) -> tuple[str | None, str | None]:
    """The table's (LatestStreamArn, StreamViewType)."""
    described = table.client().describe_table(TableName=table.name)["Table"]
    spec = described.get("StreamSpecification") or {}
    return described.get("LatestStreamArn"), spec.get("StreamViewType")


def properties(capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    capsys.readouterr()
    assert main(["worker", "--print-properties"]) == 0
    lines = capsys.readouterr().out.splitlines()
    pairs = (line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def test_setup_enables_the_table_s_stream_and_the_worker_finds_it(
    table: BackfillTable, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["worker", "--print-properties"]) == 2
    err = capsys.readouterr().err
    assert f"table {table.name} has no DynamoDB stream enabled" in err
    assert "run `ddbcdc setup`" in err and "Traceback" not in err

    assert main(["setup"]) == 0  # the table exists: its stream is enabled, nothing of Kinesis
    arn, view = stream_of(table)
    assert arn is not None and view == "NEW_AND_OLD_IMAGES"
    assert main(["setup", "--ttl-attribute", "expires_at"]) == 0  # again: kept, and TTL on
    assert stream_of(table) == (arn, view)
    ttl = table.client().describe_time_to_live(TableName=table.name)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expires_at")

    props = properties(capsys)
    assert props["dynamoDBStreamsArn"] == arn
    assert "streamName" not in props and "kinesisEndpoint" not in props

    other = arn.replace(table.name, "elsewhere")
    monkeypatch.setenv("DDBCDC_STREAM_ARN", other)
    assert properties(capsys)["dynamoDBStreamsArn"] == other
    monkeypatch.setenv("DDBCDC_STREAM_ARN", "arn:aws:kinesis:us-east-1:123456789012:stream/x")
    assert main(["worker", "--print-properties"]) == 2
    assert "is not a DynamoDB stream ARN" in capsys.readouterr().err


def test_snapshot_checks_the_table_s_stream_and_the_worker_s_leases(
    table: BackfillTable, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    table.put([rich_item(n, f"name{n}") for n in range(1, 121)])
    assert main(["snapshot", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"table {table.name} has no DynamoDB stream enabled" in err
    assert "Traceback" not in err

    assert main(["setup"]) == 0
    arn, _ = stream_of(table)
    streams = table.client("dynamodbstreams")
    shards = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    assert len(shards) == 2
    leases = f"{table.name}-app"  # a KCL lease table as the worker leaves it
    client = table.client()
    client.create_table(
        TableName=leases,
        KeySchema=[{"AttributeName": "leaseKey", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "leaseKey", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    try:
        first, second = (s["ShardId"] for s in shards)
        client.put_item(
            TableName=leases, Item={"leaseKey": {"S": first}, "checkpoint": {"S": "LATEST"}}
        )
        monkeypatch.setenv("DDBCDC_INITIAL_POSITION", "LATEST")
        assert main(["snapshot", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert f"shard {first}'s lease" in err and "is at LATEST" in err
        assert second in err  # no lease, and the worker would start it at LATEST
        assert table.query("SELECT count(*) FROM ddbcdc_snapshots") == [(0,)]

        monkeypatch.setenv("DDBCDC_INITIAL_POSITION", "TRIM_HORIZON")
        client.put_item(
            TableName=leases,
            Item={"leaseKey": {"S": first}, "checkpoint": {"S": "4960000000000000000001"}},
        )
        monkeypatch.setenv("DDBCDC_CLOCK_SKEW_MARGIN", "PT2S")  # enough on Kinesis, not here
        assert main(["snapshot", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert "refused (clock)" in err and "1s for the stream's whole seconds" in err

        monkeypatch.setenv("DDBCDC_CLOCK_SKEW_MARGIN", "PT5S")
        assert main(["snapshot", "--no-progress", "--max-rcu", "1000"]) == 0
        assert "refused" not in capsys.readouterr().err
        engine = sa.create_engine(table.database_url)
        try:
            assert compare(client, engine, table.mapping).matches
        finally:
            engine.dispose()
    finally:
        client.delete_table(TableName=leases)


def test_a_repair_refuses_a_margin_the_stream_s_second_would_eat(
    table: BackfillTable, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["setup"]) == 0
    monkeypatch.setenv("DDBCDC_CLOCK_SKEW_MARGIN", "PT1S")
    capsys.readouterr()
    assert main(["verify", "--repair"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "DDBCDC_CLOCK_SKEW_MARGIN must exceed 1s" in err[0]
