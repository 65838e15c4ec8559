"""Shared by the tests of ddbcdc.decode._speedups: the loaded extension, fixtures, comparisons."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest

from attribute_strategies import (
    NOT_BUILT,
    containers,
    difference,
    freeze,
    outcome,
    pure_python,
    walk,
)
from ddbcdc import ChangeRecord, decode_lambda_event, decode_record

try:
    from ddbcdc.decode import _speedups as loaded
except ImportError:  # reported by test_the_c_extension_is_built_and_in_use
    loaded = None

FIXTURES = Path(__file__).resolve().parent / "fixtures"
VALID = sorted((FIXTURES / "records" / "valid").glob("*.json"))
SAMPLE = FIXTURES / "sample-records.jsonl"
MAX_US = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999Z
#: timestamp_unit -> the factor decode passes to build (-1: a unit it does not know).
FACTORS = {"auto": 0, "us": 1, "ms": 1_000, "s": 1_000_000, "ns": -1}
UNITS = list(FACTORS)
SHARD_IDS = [None, "shardId-000000000003", ""]
TTL = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
TTL_CAPITALISED = {"Type": "Service", "PrincipalId": "dynamodb.amazonaws.com"}
ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/customers/stream/2015-06-27T00:48:05.899"
SEQUENCE_NUMBERS = [None, "77", "49590338271490256608559692538361571095921575989136588898", "12a"]


def speedups_module() -> ModuleType:
    """The extension, for hypothesis tests (which take no fixtures that fail per example)."""
    if loaded is None:
        pytest.fail(NOT_BUILT)
    return loaded


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / "records" / "valid" / f"{name}.json").read_text())  # type: ignore[no-any-return]


def assert_identical(actual: Any, expected: Any) -> None:
    found = difference(actual, expected)
    assert found is None, found


def short_id(value: Any) -> str:
    """A test id: the value, cut short, and the odd types in it (a StrSub prints as a str).

    The same in every process (xdist workers must collect the same ids): no object addresses.
    """
    text = re.sub(r" at 0x[0-9a-f]+", "", ascii(value))
    text = text if len(text) <= 40 else f"{text[:30]}...{len(text)}"
    odd = sorted({type(x).__name__ for x in walk(value)} & {"StrSub", "IntSub", "MapSub"})
    return "-".join([text, *odd])


class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()  # a field left out of the record


def mutate(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Set (or with ABSENT, remove) the field at a dotted path."""

    def change(record: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = record
        for part in parents:
            target = target[part]
        if value is ABSENT:
            target.pop(last, None)
        else:
            target[last] = value

    return change


def assert_same_record(actual: ChangeRecord, expected: ChangeRecord) -> None:
    assert type(actual) is ChangeRecord
    assert type(expected) is ChangeRecord
    assert list(actual.__dict__) == list(expected.__dict__) == list(ChangeRecord.model_fields)
    assert_identical(actual.__dict__, expected.__dict__)
    assert_identical(actual.model_dump(), expected.model_dump())
    assert actual.model_fields_set == expected.model_fields_set == set(ChangeRecord.model_fields)
    assert actual.__pydantic_extra__ == expected.__pydantic_extra__
    assert actual.__pydantic_private__ == expected.__pydantic_private__
    assert actual == expected


def assert_same_outcome(actual: tuple[Any, ...], expected: tuple[Any, ...]) -> None:
    assert actual[0] == expected[0], f"C: {actual}, Python: {expected}"
    if actual[0] == "value":
        assert_same_record(actual[1], expected[1])
    else:
        assert actual == expected


def _valid_sequence(value: Any) -> bool:
    return value is None or (type(value) is str and value.isdigit() and value.isascii())


def check_build(
    raw: Any, unit: str, shard_id: Any, sequence_number: Any, *, hot: bool = False
) -> Any:
    """decode_record gives Python's answer exactly, and C's build gives None or Python's
    fields; on a hot record Python accepts, C must not decline. Returns C's fields."""
    c_build = speedups_module().build

    def run(payload: Any) -> Callable[[], ChangeRecord]:
        return lambda: decode_record(
            payload,
            timestamp_unit=unit,  # type: ignore[arg-type]
            shard_id=shard_id,
            sequence_number=sequence_number,
        )

    before = freeze(raw)
    with pure_python():
        expected = outcome(run(raw))
    actual = outcome(run(raw))
    assert freeze(raw) == before, "decoding changed its input"
    assert_same_outcome(actual, expected)
    fields = None
    if type(raw) is dict and _valid_sequence(sequence_number):  # else build is not reached
        fields = c_build(raw, FACTORS[unit], shard_id, sequence_number)
        assert freeze(raw) == before, "C build changed its input"
        if fields is None:
            assert not (hot and expected[0] == "value"), "C declined a hot record"
        else:
            assert expected[0] == "value", (
                f"C built {fields!r} where Python raises {expected[2]!r} at {expected[3]!r}"
            )
            assert_identical(fields, expected[1].__dict__)
            shared = {id(c) for c in containers(fields)} & {id(c) for c in containers(raw)}
            assert not shared, "C put a container of its input into the record"
    # As Kinesis delivers it: JSON bytes (or str, or base64 of it), and in a Lambda event.
    try:
        payload = orjson.dumps(raw)
    except (orjson.JSONEncodeError, TypeError):
        return fields
    for shape in (payload, payload.decode(), base64.b64encode(payload)):
        with pure_python():
            expected = outcome(run(shape))
        assert_same_outcome(outcome(run(shape)), expected)
    check_lambda(base64.b64encode(payload).decode())
    return fields


def check_lambda(data: Any) -> None:
    """A Lambda Kinesis event with this ``kinesis.data`` decodes as in Python, exactly."""
    event = {
        "Records": [
            {
                "eventSource": "aws:kinesis",
                "eventID": "shardId-000000000000:4959",
                "kinesis": {"sequenceNumber": "4959", "data": data},
            }
        ]
    }
    with pure_python():
        expected = outcome(lambda: decode_lambda_event(event))
    actual = outcome(lambda: decode_lambda_event(event))
    assert actual[0] == expected[0], f"C: {actual}, Python: {expected}"
    if actual[0] == "value":
        assert len(actual[1]) == len(expected[1]) == 1
        assert_same_record(actual[1][0], expected[1][0])
    else:
        assert actual == expected
