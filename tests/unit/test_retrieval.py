"""Retrieval mode, fan-out consumer and start position, and the KCL properties they render."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from ddbcdc.aws.retrieval import (
    StartPosition,
    check_consumer,
    is_aws_endpoint,
    retrieval_mode,
    start_position,
)
from ddbcdc.decode.timestamps import parse_timestamp
from ddbcdc.errors import ConfigurationError
from ddbcdc.settings import Settings
from ddbcdc.worker.properties import WorkerOptions, render_properties

LOCAL = {
    "kinesis_endpoint": "http://127.0.0.1:4568",
    "dynamodb_endpoint": "http://127.0.0.1:5000",
    "cloudwatch_endpoint": "http://127.0.0.1:5000",
}
CONSUMER_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/orders-cdc/consumer/ddbcdc:1714521600"
MAY_1 = datetime(2024, 5, 1, tzinfo=UTC)


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


def settings(**values: object) -> Settings:
    return Settings(stream_name="orders-cdc", **values)  # type: ignore[arg-type]


def properties(**values: object) -> dict[str, str]:
    options = WorkerOptions.from_settings(settings(**values))
    text = render_properties(options, executable="py rp.py")
    props = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            assert key.strip() not in props, f"{key.strip()} rendered twice"
            props[key.strip()] = value.strip()
    return props


@pytest.mark.parametrize(
    ("url", "aws"),
    [
        ("https://kinesis.us-east-1.amazonaws.com", True),
        ("https://vpce-0a1b-x.kinesis.us-east-1.vpce.amazonaws.com", True),
        ("https://kinesis.cn-north-1.amazonaws.com.cn", True),
        ("http://127.0.0.1:4568", False),
        ("http://localhost:4566", False),
        ("http://amazonaws.com.example.org", False),
    ],
)
def test_aws_endpoints_are_told_from_emulators(url: str, aws: bool) -> None:
    assert is_aws_endpoint(url) is aws


def test_fanout_against_aws_polling_against_emulators_and_when_asked() -> None:
    assert retrieval_mode(settings()) == "FANOUT"
    assert retrieval_mode(settings(**LOCAL)) == "POLLING"
    assert retrieval_mode(settings(cloudwatch_endpoint="http://127.0.0.1:1")) == "POLLING"
    assert retrieval_mode(settings(retrieval_mode="polling")) == "POLLING"
    assert retrieval_mode(settings(retrieval_mode="FANOUT", **LOCAL)) == "FANOUT"
    with pytest.raises(ConfigurationError, match=r"retrieval_mode: .*FANOUT"):
        settings(retrieval_mode="push")


def test_fanout_properties_carry_the_consumer_and_no_polling_settings() -> None:
    props = properties(consumer_name="ddbcdc-prod")
    assert props["retrievalMode"] == "FANOUT"
    assert props["fanoutConfig.consumerName"] == "ddbcdc-prod"
    assert "fanoutConfig.consumerArn" not in props
    assert "maxRecords" not in props and "idleTimeBetweenReadsInMillis" not in props

    props = properties(consumer_arn=CONSUMER_ARN)
    assert props["fanoutConfig.consumerArn"] == CONSUMER_ARN
    assert "fanoutConfig.consumerName" not in props

    props = properties()
    assert props["retrievalMode"] == "FANOUT"
    assert not any(key.startswith("fanoutConfig.") for key in props)


def test_polling_properties_carry_the_polling_settings() -> None:
    props = properties(max_records=500, idle_time_between_reads_ms=100, **LOCAL)
    assert props["retrievalMode"] == "POLLING"
    assert props["maxRecords"] == "500"
    assert props["idleTimeBetweenReadsInMillis"] == "100"
    assert not any(key.startswith("fanoutConfig.") for key in props)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"consumer_name": "x", **LOCAL}, "DDBCDC_CONSUMER_NAME is set but the retrieval mode"),
        ({"consumer_arn": CONSUMER_ARN, "retrieval_mode": "POLLING"}, "DDBCDC_CONSUMER_ARN"),
        ({"consumer_name": "x", "consumer_arn": CONSUMER_ARN}, "not both"),
        ({"consumer_name": "bad name"}, "not a Kinesis consumer name"),
        ({"consumer_arn": "arn:aws:kinesis:us-east-1:1:stream/s"}, "not a Kinesis consumer ARN"),
    ],
)
def test_consumer_settings_that_cannot_apply_are_refused(
    values: dict[str, object], message: str
) -> None:
    chosen = settings(**values)
    with pytest.raises(ConfigurationError, match=message):
        check_consumer(chosen, retrieval_mode(chosen))
    with pytest.raises(ConfigurationError, match=message):
        WorkerOptions.from_settings(chosen)


def test_start_position_from_settings_and_overrides() -> None:
    assert start_position(settings()) == StartPosition("TRIM_HORIZON")
    assert start_position(settings(initial_position="latest")) == StartPosition("LATEST")
    at = settings(initial_position="AT_TIMESTAMP", initial_position_timestamp="2024-05-01T00:00Z")
    assert start_position(at) == StartPosition("AT_TIMESTAMP", MAY_1)
    # the timestamp alone means AT_TIMESTAMP
    assert start_position(settings(initial_position_timestamp="1714521600")).kind == "AT_TIMESTAMP"
    # a kind on the command line replaces the settings' position and timestamp
    assert start_position(at, kind="LATEST") == StartPosition("LATEST")
    assert start_position(at, kind="AT_TIMESTAMP") == StartPosition("AT_TIMESTAMP", MAY_1)
    later = start_position(settings(), timestamp="1714521600.5")
    assert later.timestamp_us == 1_714_521_600_500_000
    assert later.kcl_seconds == 1_714_521_600


@pytest.mark.parametrize(
    ("values", "kind", "timestamp", "message"),
    [
        ({"initial_position": "AT_TIMESTAMP"}, None, None, "AT_TIMESTAMP needs a time"),
        ({}, "AT_TIMESTAMP", None, "AT_TIMESTAMP needs a time"),
        ({}, "LATEST", "1714521600", "initial position is LATEST"),
        (
            {"initial_position": "LATEST", "initial_position_timestamp": "1714521600"},
            None,
            None,
            "DDBCDC_INITIAL_POSITION is LATEST",
        ),
        ({}, None, "yesterday", "not a time"),
        ({}, "BEGINNING", None, "must be one of"),
    ],
)
def test_start_positions_that_cannot_be_are_refused(
    values: dict[str, object], kind: str | None, timestamp: str | None, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        start_position(settings(**values), kind=kind, timestamp=timestamp)


def test_at_timestamp_renders_the_extended_property_alone_in_whole_seconds() -> None:
    props = properties(initial_position_timestamp="2024-05-01T00:00:00.999Z")
    assert props["initialPositionInStreamExtended"] == "1714521600"
    assert "initialPositionInStream" not in props
    props = properties(initial_position="LATEST")
    assert props["initialPositionInStream"] == "LATEST"
    assert "initialPositionInStreamExtended" not in props


def test_kcl_metrics_level_is_rendered() -> None:
    assert properties()["metricsLevel"] == "NONE"
    assert properties(kcl_metrics_level="summary")["metricsLevel"] == "SUMMARY"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T00:00:00Z", MAY_1),
        ("2024-05-01T02:00:00+02:00", MAY_1),
        ("2024-05-01 00:00:00", MAY_1),
        ("1714521600", MAY_1),
        ("1714521600000", MAY_1),
        ("1714521600000000", MAY_1),
        ("1714521600.000001", datetime(2024, 5, 1, 0, 0, 0, 1, tzinfo=UTC)),
    ],
)
def test_timestamps_are_iso_or_epoch_numbers(text: str, expected: datetime) -> None:
    assert parse_timestamp(text) == expected


def run_print_properties(env: dict[str, str], *args: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DDBCDC_")}
    result = subprocess.run(
        [sys.executable, "-m", "ddbcdc.cli", "worker", "--print-properties", *args],
        env={**clean, "DDBCDC_STREAM_NAME": "orders-cdc", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return dict(
        (part.strip() for part in line.split("=", 1))  # type: ignore[misc]
        for line in result.stdout.splitlines()
        if "=" in line and not line.startswith("#")
    )


def test_worker_print_properties_shows_both_modes_and_the_start() -> None:
    aws = run_print_properties(
        {"DDBCDC_CONSUMER_NAME": "cdc-efo"}, "--initial-timestamp", "2024-05-01T00:00:00Z"
    )
    assert aws["retrievalMode"] == "FANOUT"
    assert aws["fanoutConfig.consumerName"] == "cdc-efo"
    assert aws["initialPositionInStreamExtended"] == "1714521600"
    local = run_print_properties(
        {"DDBCDC_KINESIS_ENDPOINT": "http://127.0.0.1:4568"}, "--initial-position", "latest"
    )
    assert local["retrievalMode"] == "POLLING"
    assert local["maxRecords"] == "1000"
    assert local["initialPositionInStream"] == "LATEST"
