"""ddbcdc.decode._speedups.build and decode against the pure-Python record path."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attribute_strategies import (
    ATTRIBUTE_MAPS,
    LEAVES,
    IntSub,
    MapSub,
    StrSub,
)
from ddbcdc import (
    marshal,
)
from property_budget import examples
from speedup_support import (
    ABSENT,
    ARN,
    MAX_US,
    SEQUENCE_NUMBERS,
    SHARD_IDS,
    TTL,
    TTL_CAPITALISED,
    UNITS,
    VALID,
    check_build,
)

# ---------------------------------------------------------------------------- build


def put(target: dict[str, Any], key: str, value: Any) -> None:
    if value is not ABSENT:
        target[key] = value


_GOOD_IDENTITIES = [
    ABSENT,
    None,
    TTL,
    TTL_CAPITALISED,
    {"type": "Service", "PrincipalId": "dynamodb.amazonaws.com"},
    {"Type": "Service", "principalId": "dynamodb.amazonaws.com"},
    {"type": None, "Type": "Service", "principalId": "dynamodb.amazonaws.com"},
    {"type": "Service", "principalId": None, "PrincipalId": "dynamodb.amazonaws.com"},
    {"type": "Service", "principalId": "someone"},
    {"type": "User", "principalId": "dynamodb.amazonaws.com"},
    {"type": "Service"},
    {},
]
_ODD_IDENTITIES = [
    "dynamodb",
    [],
    5,
    MapSub(TTL),
    {"type": StrSub("Service"), "principalId": "dynamodb.amazonaws.com"},
    {"type": "Service", "principalId": StrSub("dynamodb.amazonaws.com")},
    {"type": 1, "principalId": 2},
    {1: 2},
]
_GOOD_TIMESTAMPS = st.one_of(
    st.integers(0, 10**11 - 1),
    st.integers(10**11, 10**14 - 1),
    st.integers(10**14, MAX_US),
    st.sampled_from(
        [
            *(0, 1, 10**11 - 1, 10**11, 10**14 - 1, 10**14, 253_402_300_799, 253_402_300_800),
            *(253_402_300_799_999, 253_402_300_800_000, MAX_US, MAX_US + 1),
        ]
    ),
)
_ODD_TIMESTAMPS = st.one_of(
    st.sampled_from(
        [
            *(-1, -(10**11), 10**30, -(10**30), 2**63 - 1, 2**63, 2**64, True, False, None),
            *(ABSENT, 1.5, 1667565639.123, float("inf"), float("nan"), -0.0, 0.0, "1667565639"),
            *(Decimal("1667565639.5"), Decimal("NaN"), IntSub(1667565639), [1]),
            datetime(2022, 11, 4, 12, 40, tzinfo=timezone(timedelta(hours=1))),
            datetime(2022, 11, 4, 12, 40, tzinfo=UTC),
            datetime(2022, 11, 4, 12, 40),
        ]
    ),
    st.floats(0, 1e15),
)
# Images of one level and a list (the attribute tests nest deeper): records stay cheap.
_IMAGE_ITEMS = st.dictionaries(
    st.text(max_size=6), st.one_of(LEAVES, st.lists(LEAVES, max_size=2)), max_size=5
)
_KEYS = st.dictionaries(st.text(max_size=8), LEAVES, min_size=1, max_size=2).map(marshal)
_IMAGES = st.one_of(st.just(ABSENT), st.none(), _IMAGE_ITEMS.map(marshal))
_NO_IMAGE = st.sampled_from([ABSENT, None])
_ODD_MAPS = st.one_of(
    ATTRIBUTE_MAPS,
    _IMAGE_ITEMS.map(lambda item: {**marshal(item), "z": {"N": "x"}}),
    _IMAGE_ITEMS.map(lambda item: MapSub(marshal(item))),
    st.sampled_from([ABSENT, None, {}, [], "x", 5]),
)


@st.composite
def change_records(draw: st.DrawFn) -> tuple[dict[str, Any], bool]:
    """A Kinesis-format change record (now and then a DynamoDB Streams one), and whether
    it is "clean": in the shape the hot path is for, every field of it good.

    A third are clean, a third have one odd field (so that the odd value is what decides),
    a third have any number of odd fields.
    """
    mode = draw(st.sampled_from(["clean", "one odd field", "odd fields"]), label="mode")
    clean = mode == "clean"
    odd_field = draw(st.integers(0, 15), label="odd field") if mode == "one odd field" else -1
    fields = 0

    def pick(good: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> Any:
        nonlocal fields, clean
        fields += 1
        if fields - 1 == odd_field or (mode == "odd fields" and draw(st.integers(0, 3)) == 0):
            clean = False
            return draw(odd)
        return draw(good)

    def one(values: list[Any]) -> st.SearchStrategy[Any]:
        return st.sampled_from(values).map(lambda v: dict(v) if type(v) is dict else v)

    streams = mode == "odd fields" and draw(st.integers(0, 2)) == 0
    event = pick(
        st.sampled_from(["INSERT", "MODIFY", "REMOVE"]),
        st.sampled_from(["UPSERT", "", None, ABSENT, 1, "insert", StrSub("INSERT"), ["INSERT"]]),
    )
    dynamodb: dict[str, Any] = {}
    put(dynamodb, "ApproximateCreationDateTime", pick(_GOOD_TIMESTAMPS, _ODD_TIMESTAMPS))
    put(dynamodb, "Keys", pick(_KEYS, _ODD_MAPS))
    put(dynamodb, "NewImage", pick(_NO_IMAGE if event == "REMOVE" else _IMAGES, _ODD_MAPS))
    put(dynamodb, "OldImage", pick(_NO_IMAGE if event == "INSERT" else _IMAGES, _ODD_MAPS))
    put(
        dynamodb,
        "SizeBytes",
        pick(
            st.one_of(st.sampled_from([ABSENT, None, 0, 10**30]), st.integers(0, 10**6)),
            st.sampled_from([-1, -(10**30), True, False, 1.5, "10", IntSub(5), float("nan")]),
        ),
    )
    sequences = st.sampled_from(["111", "12a", "", 5, None, "\u0661\u0662", "0" * 60])
    if streams:
        dynamodb["SequenceNumber"] = draw(sequences)
        dynamodb["StreamViewType"] = "NEW_AND_OLD_IMAGES"
    else:
        put(dynamodb, "SequenceNumber", pick(st.just(ABSENT), sequences))
    raw: dict[str, Any] = {}
    put(
        raw,
        "awsRegion",
        pick(
            st.sampled_from([ABSENT, None, "us-east-1", ""]),
            st.sampled_from([5, ["us"], True, StrSub("us-east-1")]),
        ),
    )
    put(
        raw,
        "eventID",
        pick(st.text(min_size=1, max_size=8), st.sampled_from(["", None, ABSENT, 5, StrSub("x")])),
    )
    put(raw, "eventName", event)
    put(raw, "userIdentity", pick(one(_GOOD_IDENTITIES), st.sampled_from(_ODD_IDENTITIES)))
    put(
        raw,
        "recordFormat",
        pick(
            st.sampled_from([ABSENT, None, "application/json"]),
            st.sampled_from(["application/protobuf", 5, "", StrSub("application/json")]),
        ),
    )
    if streams:
        raw["eventVersion"] = "1.1"
        put(raw, "eventSourceARN", draw(st.sampled_from([ARN, ARN, "arn:x", 5, None, ABSENT])))
        put(raw, "tableName", draw(st.sampled_from([ABSENT, ABSENT, None, "t"])))
    else:
        put(
            raw,
            "tableName",
            pick(st.text(max_size=8), st.sampled_from([ABSENT, None, 5, StrSub("t")])),
        )
    put(
        raw,
        "dynamodb",
        pick(
            st.just(dynamodb),
            st.one_of(st.sampled_from([ABSENT, None, [], "x"]), st.just(MapSub(dynamodb))),
        ),
    )
    put(
        raw,
        "eventSource",
        pick(
            st.sampled_from([ABSENT, None, "aws:dynamodb"]),
            st.sampled_from(["aws:kinesis", 5, "", StrSub("aws:dynamodb")]),
        ),
    )
    if pick(st.just(False), st.just(True)):
        raw["somethingElse"] = {"N": "1"}
    return raw, clean and not streams


@settings(max_examples=examples(300), deadline=None)
@given(
    change_records(),
    st.sampled_from(UNITS),
    st.sampled_from(SHARD_IDS),
    st.sampled_from(SEQUENCE_NUMBERS),
)
def test_build_declines_or_builds_exactly_what_python_builds(
    record: tuple[dict[str, Any], bool], unit: str, shard_id: Any, sequence_number: Any
) -> None:
    raw, clean = record
    check_build(raw, unit, shard_id, sequence_number, hot=clean and unit != "ns")


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_build_on_every_valid_fixture(path: Path) -> None:
    raw = json.loads(path.read_text())
    kinesis = path.stem.startswith("kinesis")
    handled = 0
    for unit in UNITS:
        for shard_id in SHARD_IDS:
            for sequence_number in SEQUENCE_NUMBERS:
                hot = kinesis and unit != "ns"
                fields = check_build(raw, unit, shard_id, sequence_number, hot=hot)
                handled += fields is not None
    assert (handled > 0) == kinesis


@pytest.mark.parametrize("arn", [ARN, None])
def test_a_null_table_name_reads_the_table_of_the_arn_as_python_does(arn: str | None) -> None:
    raw = json.loads(next(p for p in VALID if p.stem == "kinesis-insert-ms").read_text())
    raw["tableName"] = None
    raw.pop("eventSourceARN", None)
    if arn is not None:
        raw["eventSourceARN"] = arn
    check_build(raw, "auto", None, None, hot=arn is None)
