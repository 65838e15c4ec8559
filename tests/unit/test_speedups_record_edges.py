"""ddbcdc.decode._speedups on record edge cases, Lambda kinesis.data variants, every timestamp."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from types import ModuleType
from typing import Any

import orjson
import pytest

from attribute_strategies import (
    IntSub,
    MapSub,
    StrSub,
)
from speedup_support import (
    ABSENT,
    ARN,
    FIXTURES,
    MAX_US,
    TTL,
    TTL_CAPITALISED,
    UNITS,
    assert_identical,
    check_build,
    check_lambda,
    load,
    mutate,
    short_id,
)


def _both(*changes: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def change(record: dict[str, Any]) -> None:
        for one in changes:
            one(record)

    return change


_RECORD_EDGES: dict[str, tuple[str, Callable[[dict[str, Any]], None]]] = {
    "unchanged": ("kinesis-modify-ms", lambda r: None),
    "REMOVE with NewImage": ("kinesis-modify-ms", mutate("eventName", "REMOVE")),
    "INSERT with OldImage": ("kinesis-modify-ms", mutate("eventName", "INSERT")),
    "REMOVE with NewImage null": (
        "kinesis-remove-us",
        mutate("dynamodb.NewImage", None),
    ),
    "INSERT with OldImage null": ("kinesis-insert-ms", mutate("dynamodb.OldImage", None)),
    "bad OldImage": ("kinesis-modify-ms", mutate("dynamodb.OldImage.phone", {"N": "1.2.3"})),
    "bad NewImage": ("kinesis-modify-ms", mutate("dynamodb.NewImage.phone", {"B": "AB=="})),
    "bad Keys": ("kinesis-modify-ms", mutate("dynamodb.Keys.userid", {"N": 8})),
    "empty Keys": ("kinesis-modify-ms", mutate("dynamodb.Keys", {})),
    "Keys missing": ("kinesis-modify-ms", mutate("dynamodb.Keys", ABSENT)),
    "NewImage empty": ("kinesis-modify-ms", mutate("dynamodb.NewImage", {})),
    "NewImage a list": ("kinesis-modify-ms", mutate("dynamodb.NewImage", [])),
    "eventName missing": ("kinesis-modify-ms", mutate("eventName", ABSENT)),
    "eventName lowercase": ("kinesis-modify-ms", mutate("eventName", "modify")),
    "eventID empty": ("kinesis-modify-ms", mutate("eventID", "")),
    "eventID a number": ("kinesis-modify-ms", mutate("eventID", 5)),
    "eventSource kinesis": ("kinesis-modify-ms", mutate("eventSource", "aws:kinesis")),
    "eventSource null": ("kinesis-modify-ms", mutate("eventSource", None)),
    "recordFormat protobuf": ("kinesis-modify-ms", mutate("recordFormat", "application/x")),
    "recordFormat null": ("kinesis-modify-ms", mutate("recordFormat", None)),
    "tableName a number": ("kinesis-modify-ms", mutate("tableName", 5)),
    "tableName null": ("kinesis-modify-ms", mutate("tableName", None)),
    "tableName missing, ARN": (
        "kinesis-modify-ms",
        _both(mutate("tableName", ABSENT), mutate("eventSourceARN", ARN)),
    ),
    "tableName missing, bad ARN": (
        "kinesis-modify-ms",
        _both(mutate("tableName", ABSENT), mutate("eventSourceARN", "arn:x")),
    ),
    "awsRegion a number": ("kinesis-modify-ms", mutate("awsRegion", 5)),
    "awsRegion null": ("kinesis-modify-ms", mutate("awsRegion", None)),
    "awsRegion missing": ("kinesis-modify-ms", mutate("awsRegion", ABSENT)),
    "dynamodb a list": ("kinesis-modify-ms", mutate("dynamodb", [])),
    "dynamodb missing": ("kinesis-modify-ms", mutate("dynamodb", ABSENT)),
    "SizeBytes negative": ("kinesis-modify-ms", mutate("dynamodb.SizeBytes", -1)),
    "SizeBytes huge": ("kinesis-modify-ms", mutate("dynamodb.SizeBytes", 10**30)),
    "SizeBytes huge negative": ("kinesis-modify-ms", mutate("dynamodb.SizeBytes", -(10**30))),
    "SizeBytes true": ("kinesis-modify-ms", mutate("dynamodb.SizeBytes", True)),
    "SizeBytes null": ("kinesis-modify-ms", mutate("dynamodb.SizeBytes", None)),
    "SizeBytes float": ("kinesis-modify-ms", mutate("dynamodb.SizeBytes", 104.0)),
    "SizeBytes missing": ("kinesis-modify-ms", mutate("dynamodb.SizeBytes", ABSENT)),
    "SequenceNumber": ("kinesis-modify-ms", mutate("dynamodb.SequenceNumber", "111")),
    "SequenceNumber bad": ("kinesis-modify-ms", mutate("dynamodb.SequenceNumber", "12a")),
    "SequenceNumber null": ("kinesis-modify-ms", mutate("dynamodb.SequenceNumber", None)),
    "TTL camelCase": ("kinesis-remove-us", mutate("userIdentity", TTL)),
    "TTL capitalised": ("kinesis-remove-us", mutate("userIdentity", TTL_CAPITALISED)),
    "TTL type null, Type given": (
        "kinesis-remove-us",
        mutate("userIdentity", {"type": None, **TTL_CAPITALISED}),
    ),
    "TTL on a MODIFY": ("kinesis-modify-ms", mutate("userIdentity", TTL)),
    "userIdentity a string": ("kinesis-remove-us", mutate("userIdentity", "dynamodb")),
    "userIdentity a list": ("kinesis-remove-us", mutate("userIdentity", [])),
    "userIdentity type a str subclass": (
        "kinesis-remove-us",
        mutate("userIdentity", {**TTL, "type": StrSub("Service")}),
    ),
    "userIdentity principalId a str subclass": (
        "kinesis-remove-us",
        mutate("userIdentity", {**TTL, "principalId": StrSub("dynamodb.amazonaws.com")}),
    ),
    "eventName a str subclass": ("kinesis-modify-ms", mutate("eventName", StrSub("MODIFY"))),
    "tableName a str subclass": ("kinesis-modify-ms", mutate("tableName", StrSub("t"))),
    "eventSource a str subclass": (
        "kinesis-modify-ms",
        mutate("eventSource", StrSub("aws:dynamodb")),
    ),
    # CPython refuses int() of more than 4,300 digits, leading zeros included.
    "N with 5000 leading zeros": (
        "kinesis-modify-ms",
        mutate("dynamodb.NewImage.phone", {"N": "0" * 5000 + "1234567890123456789012"}),
    ),
    "N negative with 5000 leading zeros": (
        "kinesis-modify-ms",
        mutate("dynamodb.NewImage.phone", {"N": "-" + "0" * 5000 + "98765432109876543210"}),
    ),
    "N fraction with 5000 leading zeros": (
        "kinesis-modify-ms",
        mutate("dynamodb.NewImage.phone", {"N": "0" * 5000 + "12.5"}),
    ),
    "NS with 5000 leading zeros": (
        "kinesis-modify-ms",
        mutate("dynamodb.NewImage.phone", {"NS": ["0" * 5000 + "123456789012345678901", "2"]}),
    ),
    "dynamodb a dict subclass": (
        "kinesis-modify-ms",
        lambda r: r.update(dynamodb=MapSub(r["dynamodb"])),
    ),
}
_TIMESTAMPS = [
    *(0, 1, 999, 10**11 - 1, 10**11, 10**14 - 1, 10**14, 1667565639, 1667565639982),
    *(1667565639982123, 253_402_300_799, 253_402_300_800, 253_402_300_799_999),
    *(253_402_300_800_000, MAX_US, MAX_US + 1, 2**63 - 1, 2**63, 2**64, 10**30),
    *(-1, -(10**30), True, False, None, 1.5, 1667565639.1234565, float("inf"), float("nan")),
    *("1667565639", Decimal("1667565639.5"), IntSub(1667565639), [1], ABSENT),
    datetime(2022, 11, 4, 12, 40, 39, 123456, tzinfo=timezone(timedelta(hours=1))),
]
#: The edges still in the Kinesis format's common shape: C must build them (when valid).
_HOT_EDGES = {
    *("unchanged", "REMOVE with NewImage null", "INSERT with OldImage null", "NewImage empty"),
    *("eventSource null", "recordFormat null", "awsRegion null", "awsRegion missing"),
    *("SizeBytes null", "SizeBytes missing", "TTL camelCase", "TTL capitalised"),
    *("TTL type null, Type given", "TTL on a MODIFY", "userIdentity null"),
}
_RECORD_EDGES["userIdentity null"] = ("kinesis-remove-us", mutate("userIdentity", None))
for _value in _TIMESTAMPS:
    _RECORD_EDGES[f"timestamp {short_id(_value)}"] = (
        "kinesis-modify-ms",
        mutate("dynamodb.ApproximateCreationDateTime", _value),
    )
    if type(_value) is int and 0 <= _value <= MAX_US:  # valid in auto
        _HOT_EDGES.add(f"timestamp {short_id(_value)}")


@pytest.mark.parametrize(
    ("fixture", "change", "hot"),
    [
        pytest.param(fixture, change, edge in _HOT_EDGES, id=edge)
        for edge, (fixture, change) in _RECORD_EDGES.items()
    ],
)
def test_build_edges(fixture: str, change: Callable[[dict[str, Any]], None], hot: bool) -> None:
    raw = load(fixture)
    change(raw)
    built = 0
    for unit in UNITS:
        for shard_id, sequence_number in ((None, None), ("shardId-000000000003", "77")):
            fields = check_build(raw, unit, shard_id, sequence_number, hot=hot and unit != "ns")
            built += fields is not None
    assert not hot or built


def test_streams_records_from_lambda() -> None:
    event = json.loads((FIXTURES / "lambda" / "dynamodb-event.json").read_text())
    for record in event["Records"]:
        for unit in UNITS:
            check_build(record, unit, None, None)
            check_build(record, unit, "shardId-1", "5")


_JSON_TEXT = orjson.dumps(load("kinesis-modify-ms"))
_BASE64 = base64.b64encode(_JSON_TEXT).decode()
_LAMBDA_DATA = {
    "base64": _BASE64,
    "trailing newline": _BASE64 + "\n",
    "leading space": " " + _BASE64,
    "unicode space": _BASE64 + "\u3000",
    "raw JSON": _JSON_TEXT.decode(),
    "base64 of base64": base64.b64encode(_BASE64.encode()).decode(),
    "base64 of spaced JSON": base64.b64encode(b" \n" + _JSON_TEXT + b"\t").decode(),
    "url-safe base64": base64.urlsafe_b64encode(b"\xfb\xff" + _JSON_TEXT).decode(),
    "no padding": _BASE64.rstrip("="),
    "empty": "",
    "base64 of []": base64.b64encode(b"[]").decode(),
    "base64 of {}": base64.b64encode(b"{}").decode(),
    "base64 of bad JSON": base64.b64encode(_JSON_TEXT[:-1]).decode(),
    "a number": 5,
    "bytes": _BASE64.encode(),
    "str subclass": StrSub(_BASE64),
}


@pytest.mark.parametrize("data", _LAMBDA_DATA.values(), ids=_LAMBDA_DATA.keys())
def test_lambda_kinesis_data(data: Any) -> None:
    check_lambda(data)


def test_timestamps_become_the_same_datetime_across_the_whole_range(speedups: ModuleType) -> None:
    raw = load("kinesis-modify-ms")
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    # Every leap-year rule and month end, both ends of the range, and a stride through it.
    micros = [0, 1, 999_999, 1_000_000, MAX_US - 1, MAX_US, *range(0, MAX_US, MAX_US // 5003)]
    for year in (1970, 1972, 2000, 2100, 2400, 9999):
        for month in range(1, 13):
            start = datetime(year, month, 1, tzinfo=UTC)
            micros += [(start - epoch) // timedelta(microseconds=1) + d for d in (-1, 0, 1)]
    for value in micros:
        if not 0 <= value <= MAX_US:
            continue
        raw["dynamodb"]["ApproximateCreationDateTime"] = value
        fields = speedups.build(raw, 1, None, None)
        assert fields is not None
        expected = epoch + timedelta(microseconds=value)
        assert_identical(fields["approximate_creation"], expected)
        assert fields["approximate_creation_us"] == value
