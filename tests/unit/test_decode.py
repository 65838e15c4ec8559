"""ddbcdc.decode.record: every fixture, every payload shape, timestamps, positions and garbage."""

from __future__ import annotations

import base64
import contextlib
import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddbcdc import ChangeRecord, DecodeError, decode_lambda_event, decode_record
from ddbcdc.decode.render import record_to_json
from property_budget import examples

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
VALID = sorted((FIXTURES / "records" / "valid").glob("*.json"))
INVALID = sorted((FIXTURES / "records" / "invalid").glob("*.json"))


def load(name: str) -> dict[str, Any]:
    path = FIXTURES / "records" / "valid" / f"{name}.json"
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def raw(name: str) -> bytes:
    return orjson.dumps(load(name))


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_every_valid_fixture_decodes_the_same_from_every_payload_shape(path: Path) -> None:
    text = path.read_bytes()
    compact = orjson.dumps(orjson.loads(text))
    shapes: list[Any] = [
        text,  # pretty JSON with its leading/trailing whitespace
        compact,
        compact.decode(),
        base64.b64encode(compact),
        base64.b64encode(compact).decode() + "\n",
        bytearray(compact),
        orjson.loads(text),
    ]
    records = [decode_record(shape) for shape in shapes]
    assert all(record == records[0] for record in records)
    record = records[0]
    assert record.approximate_creation.tzinfo is UTC
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert record.approximate_creation == epoch + timedelta(
        microseconds=record.approximate_creation_us
    )
    assert ChangeRecord.model_validate(record.model_dump()) == record


def test_the_issue_example_modify_in_milliseconds() -> None:
    record = decode_record(base64.b64encode(raw("kinesis-modify-ms")))
    assert record.event_id == "d3ed405e-420b-4601-8aaf-bda773a16d86"
    assert record.event_name == "MODIFY"
    assert record.table_name == "hubert_dynamocdc"
    assert record.aws_region == "us-west-2"
    assert record.keys == {"userid": 8}
    assert record.new_image == {
        "last_name": "gX8fQ2n",
        "phone": 8,
        "userid": 8,
        "first_name": "gX8fQ2n",
    }
    assert record.old_image is not None
    assert record.old_image["last_name"] == "K2zqYSK"
    assert record.approximate_creation_us == 1_667_565_639_982_000
    assert record.approximate_creation == datetime(2022, 11, 4, 12, 40, 39, 982000, tzinfo=UTC)
    assert record.size_bytes == 104
    assert record.is_ttl_delete is False
    assert (record.shard_id, record.sequence_number) == (None, None)


def test_insert_remove_and_ttl_delete() -> None:
    insert = decode_record(raw("kinesis-insert-ms"))
    assert (insert.event_name, insert.old_image) == ("INSERT", None)
    assert insert.new_image == {
        "userid": 42,
        "first_name": "Ada",
        "last_name": "Lovelace",
        "phone": 4915112345678,
    }
    remove = decode_record(raw("kinesis-remove-us"))
    assert (remove.event_name, remove.new_image, remove.is_ttl_delete) == ("REMOVE", None, False)
    assert remove.approximate_creation_us == 1_667_565_641_000_123
    ttl = decode_record(raw("kinesis-ttl-delete-us"))
    assert ttl.is_ttl_delete is True
    assert ttl.approximate_creation_us == 1_667_566_000_000_456


@pytest.mark.parametrize(
    "identity",
    [
        {"type": "Service", "principalId": "lambda.amazonaws.com"},
        {"type": "User", "principalId": "dynamodb.amazonaws.com"},
        {"type": "Service"},
    ],
)
def test_a_remove_is_an_expiry_only_by_the_dynamodb_ttl_service(identity: dict[str, str]) -> None:
    record = load("kinesis-ttl-delete-us")
    record["userIdentity"] = identity
    assert decode_record(record).is_ttl_delete is False


def test_every_attribute_type_and_edge() -> None:
    image = decode_record(raw("kinesis-every-type")).new_image
    assert image is not None
    assert image["s_empty"] == ""
    assert image["s_unicode"] == 'grüße, 世界 🙂 "quoted" back\\slash\nnew line'
    assert image["n_38_digits"] == 12345678901234567890123456789012345678
    assert type(image["n_38_digits"]) is int
    exact = {
        "n_38_digits_negative_fraction": "-1.2345678901234567890123456789012345678",
        "n_exponent": "1.10E+5",
        "n_trailing_zeros": "123.4500",
        "n_smallest": "1E-130",
        "n_largest": "9.9999999999999999999999999999999999999E+125",
    }
    for name, text in exact.items():
        assert type(image[name]) is Decimal
        assert str(image[name]) == text
    assert image["n_large_integer"] == 10**41
    assert (image["n_zero"], image["n_negative"]) == (0, -42)
    assert image["b_all_bytes"] == bytes(range(256))
    assert image["b_empty"] == b""
    assert (image["bool_true"], image["bool_false"], image["null"]) == (True, False, None)
    assert image["ss"] == {"a", "b", "grüße"}
    assert image["ns"] == {1, Decimal("2.50"), -3, Decimal("1E-130")}
    assert image["bs"] == {b"\x00\x01\x02", b"\xff"}
    assert (image["l_empty"], image["m_empty"]) == ([], {})
    assert image["nested"] == {"level1": [{"level3": ["deep", 3]}]}


def test_dynamodb_streams_format_seconds_sequence_and_table_from_arn() -> None:
    insert = decode_record(load("streams-insert-s"))
    assert insert.table_name == "customers"
    assert insert.sequence_number == "111"
    assert insert.approximate_creation_us == 1_479_499_740_000_000
    modify = decode_record(raw("streams-modify-float-s"))
    assert modify.approximate_creation_us == 1_667_565_639_123_000  # float seconds, exact
    ttl = decode_record(load("streams-ttl-delete-s"))
    assert ttl.is_ttl_delete is True
    given_position = decode_record(load("streams-insert-s"), sequence_number="999")
    assert given_position.sequence_number == "999"


def test_getrecords_shapes_from_boto3_are_accepted() -> None:
    record = load("streams-ttl-delete-s")
    record["dynamodb"]["ApproximateCreationDateTime"] = datetime(
        2022, 11, 4, 13, 40, 39, 123456, tzinfo=timezone(timedelta(hours=1))
    )
    record["dynamodb"]["OldImage"]["photo"] = {"B": b"\x00\xff"}
    record["userIdentity"] = {"Type": "Service", "PrincipalId": "dynamodb.amazonaws.com"}
    decoded = decode_record(record)
    assert decoded.approximate_creation_us == 1_667_565_639_123_456
    assert decoded.old_image is not None and decoded.old_image["photo"] == b"\x00\xff"
    assert decoded.is_ttl_delete is True
    record["dynamodb"]["ApproximateCreationDateTime"] = datetime(2022, 11, 4)
    with pytest.raises(DecodeError, match="naive"):
        decode_record(record)


@pytest.mark.parametrize(
    ("value", "unit", "micros"),
    [
        (1667565639, "auto", 1_667_565_639_000_000),
        (1667565639.123, "auto", 1_667_565_639_123_000),
        (1667565639.1234565, "auto", 1_667_565_639_123_456),  # half to even at the us
        (1667565639982, "auto", 1_667_565_639_982_000),
        (1667565639982123, "auto", 1_667_565_639_982_123),
        (99_999_999_999, "auto", 99_999_999_999_000_000),  # just under 1e11: seconds
        (100_000_000_000, "auto", 100_000_000_000_000),  # 1e11: milliseconds
        (100_000_000_000_000, "auto", 100_000_000_000_000),  # 1e14: microseconds
        (1667565639982, "us", 1_667_565_639_982),
        (1667565639, "ms", 1_667_565_639_000),
        (1667565639982, "s", None),  # year ~54800: out of range
        (0, "auto", 0),
    ],
)
def test_timestamp_units(value: float, unit: Any, micros: int | None) -> None:
    record = load("kinesis-modify-ms")
    record["dynamodb"]["ApproximateCreationDateTime"] = value
    if micros is None:
        with pytest.raises(DecodeError, match="range"):
            decode_record(orjson.dumps(record), timestamp_unit=unit)
        return
    assert decode_record(orjson.dumps(record), timestamp_unit=unit).approximate_creation_us == (
        micros
    )


@pytest.mark.parametrize("value", [-1, True, "1667565639982", None, float("nan"), [1]])
def test_bad_timestamps(value: Any) -> None:
    record = load("kinesis-modify-ms")
    record["dynamodb"]["ApproximateCreationDateTime"] = value
    with pytest.raises(DecodeError) as caught:
        decode_record(record)
    assert caught.value.path == "dynamodb.ApproximateCreationDateTime"


EXPECTED_PATHS = {
    "bad-base64": "dynamodb.NewImage.photo.B",
    "bad-event-name": "eventName",
    "bare-value": "dynamodb.NewImage.phone",
    "empty-set": "dynamodb.NewImage.tags.SS",
    "missing-keys": "dynamodb.Keys",
    "missing-timestamp": "dynamodb.ApproximateCreationDateTime",
    "number-not-a-literal": "dynamodb.NewImage.phone.N",
    "number-not-a-string": "dynamodb.NewImage.phone.N",
    "two-types": "dynamodb.NewImage.phone",
    "unknown-type": "dynamodb.NewImage.phone",
}


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_fixtures_raise_with_path_and_position(path: Path) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_record(path.read_bytes(), shard_id="shardId-000000000003", sequence_number="77")
    error = caught.value
    assert error.path == EXPECTED_PATHS[path.stem]
    assert (error.shard_id, error.sequence_number) == ("shardId-000000000003", "77")
    assert "shard shardId-000000000003" in str(error)


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda r: r["dynamodb"].pop("NewImage") and r.update(eventName="INSERT"), "OldImage"),
        (lambda r: r.update(eventName="REMOVE"), "NewImage"),
        (lambda r: r.update(eventID=""), "eventID"),
        (lambda r: r.update(eventSource="aws:kinesis"), "eventSource"),
        (lambda r: r.update(recordFormat="application/protobuf"), "recordFormat"),
        (lambda r: r.update(tableName=5), "tableName"),
        (lambda r: r.update(awsRegion=5), "awsRegion"),
        (lambda r: r.update(userIdentity="dynamodb"), "userIdentity"),
        (lambda r: r.update(dynamodb=[]), "dynamodb"),
        (lambda r: r["dynamodb"].update(SizeBytes=-1), "dynamodb.SizeBytes"),
        (lambda r: r["dynamodb"].update(SequenceNumber="12a"), "dynamodb.SequenceNumber"),
        (lambda r: r.pop("tableName") and r.update(eventSourceARN="arn:x"), "eventSourceARN"),
    ],
)
def test_envelope_errors(change: Any, path: str) -> None:
    record = load("kinesis-modify-ms")
    change(record)
    with pytest.raises(DecodeError) as caught:
        decode_record(orjson.dumps(record))
    assert caught.value.path is not None and caught.value.path.endswith(path)


@pytest.mark.parametrize(
    "payload",
    [b"", b"   ", "", b"[]", b"null", b'"x"', b"{", "not base64!", b"e30=", "éé", 5, None, [1]],
)
def test_bad_payloads(payload: Any) -> None:
    with pytest.raises(DecodeError):
        decode_record(payload)


def test_model_is_frozen_and_built_like_model_validate() -> None:
    record = decode_record(raw("kinesis-modify-ms"))
    with pytest.raises(ValueError, match="frozen"):
        record.event_id = "x"  # type: ignore[misc]
    assert record == ChangeRecord.model_validate(record.model_dump())
    assert record.model_fields_set == set(ChangeRecord.model_fields)
    assert record.model_copy() == record


def test_model_dump_json_is_lossless_for_binary_numbers_and_sets() -> None:
    record = load("streams-ttl-delete-s")
    record["dynamodb"]["OldImage"]["photo"] = {"B": b"\x00\xff"}  # not UTF-8
    record["dynamodb"]["OldImage"]["tags"] = {"BS": ["/w==", "AA=="]}
    record["dynamodb"]["OldImage"]["price"] = {"N": "1.500"}
    decoded = decode_record(record)
    dumped = json.loads(decoded.model_dump_json())
    assert dumped["old_image"]["photo"] == "AP8="
    assert dumped["old_image"]["tags"] == ["AA==", "/w=="]
    assert dumped["old_image"]["price"] == "1.500"
    printed = json.loads(record_to_json(decoded))  # as ddbcdc decode prints it
    assert [dumped[f] for f in ("keys", "old_image")] == [printed[f] for f in ("keys", "old_image")]


def test_lambda_kinesis_event_carries_shard_and_sequence() -> None:
    event = json.loads((FIXTURES / "lambda" / "kinesis-event.json").read_text())
    records = decode_lambda_event(event)
    assert [r.event_name for r in records] == ["MODIFY", "INSERT", "REMOVE"]
    assert {r.shard_id for r in records} == {"shardId-000000000000"}
    assert [r.sequence_number for r in records] == [
        e["kinesis"]["sequenceNumber"] for e in event["Records"]
    ]
    assert records[2].is_ttl_delete is True


def test_lambda_dynamodb_event_carries_sequence_and_table() -> None:
    event = json.loads((FIXTURES / "lambda" / "dynamodb-event.json").read_text())
    records = decode_lambda_event(event)
    assert [r.sequence_number for r in records] == ["111", "222", "333"]
    assert {r.table_name for r in records} == {"customers"}


def test_lambda_event_errors_name_the_record_index() -> None:
    event = json.loads((FIXTURES / "lambda" / "kinesis-event.json").read_text())
    bad = dict(load("kinesis-modify-ms"), eventName="UPSERT")
    event["Records"][1]["kinesis"]["data"] = base64.b64encode(orjson.dumps(bad)).decode()
    with pytest.raises(DecodeError) as caught:
        decode_lambda_event(event)
    assert caught.value.path == "Records[1].kinesis.data.eventName"
    assert caught.value.shard_id == "shardId-000000000000"
    event["Records"][2]["kinesis"]["data"] = "%%%"
    event["Records"][1] = {"eventSource": "aws:sqs"}
    with pytest.raises(DecodeError) as caught:
        decode_lambda_event(event)
    assert caught.value.path == "Records[1].eventSource"
    for broken in ({}, {"Records": {}}, {"Records": [1]}, []):
        with pytest.raises(DecodeError):
            decode_lambda_event(broken)  # type: ignore[arg-type]


def test_deeply_nested_json_is_a_decode_error() -> None:
    deep = b'{"awsRegion":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(DecodeError):
        decode_record(deep)


@settings(max_examples=examples(300), deadline=None)
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200)))
def test_random_payloads_only_ever_raise_decode_error(payload: bytes | str) -> None:
    with contextlib.suppress(DecodeError):
        decode_record(payload)


_SOURCES = [orjson.dumps(load(path.stem)) for path in VALID]


@settings(max_examples=examples(400), deadline=None)
@given(
    st.sampled_from(_SOURCES),
    st.lists(st.tuples(st.integers(0, 10_000), st.binary(max_size=3)), min_size=1, max_size=4),
    st.booleans(),
)
def test_mutated_records_only_ever_raise_decode_error(
    source: bytes, edits: list[tuple[int, bytes]], encode: bool
) -> None:
    data = bytearray(source)
    for position, replacement in edits:
        at = position % (len(data) + 1)
        data[at : at + len(replacement)] = replacement
    payload = base64.b64encode(bytes(data)) if encode else bytes(data)
    with contextlib.suppress(DecodeError):
        decode_record(payload)


_JSON_LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=6)
)
_JSON = st.recursive(
    _JSON_LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=examples(300), deadline=None)
@given(st.sampled_from(_SOURCES), st.data())
def test_structurally_mutated_records_only_ever_raise_decode_error(
    source: bytes, data: st.DataObject
) -> None:
    record = orjson.loads(source)
    spots: list[tuple[Any, Any]] = []

    def collect(node: Any) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            spots.append((node, key))
            if isinstance(value, dict | list):
                collect(value)

    collect(record)
    for _ in range(data.draw(st.integers(1, 3))):
        container, key = data.draw(st.sampled_from(spots))
        container[key] = data.draw(_JSON)
    with contextlib.suppress(DecodeError):
        decode_record(record)
    try:
        payload = orjson.dumps(record)
    except orjson.JSONEncodeError:  # e.g. an integer beyond 64 bits: not JSON orjson writes
        return
    with contextlib.suppress(DecodeError):
        decode_record(payload)


def _outcome(call: Any) -> tuple[Any, ...]:
    try:
        record = call()
    except DecodeError as exc:
        return ("error", exc.message, exc.path)
    return ("value", record.approximate_creation_us, record.approximate_creation)


@settings(max_examples=examples(300), deadline=None)
@given(
    st.one_of(
        st.integers(0, 10**17),
        st.integers(10**11 - 2, 10**11 + 2),
        st.integers(10**14 - 2, 10**14 + 2),
        st.integers(-3, 3),
        st.just(253_402_300_799_999_999),  # datetime.max in microseconds
        st.just(253_402_300_800_000_000),
    ),
    st.sampled_from(["auto", "s", "ms", "us"]),
)
def test_integer_timestamp_fast_path_agrees_with_the_general_path(value: int, unit: Any) -> None:
    record = load("kinesis-modify-ms")
    record["dynamodb"]["ApproximateCreationDateTime"] = value
    fast = _outcome(lambda: decode_record(orjson.dumps(record), timestamp_unit=unit))
    record["dynamodb"]["ApproximateCreationDateTime"] = Decimal(value)  # no shortcut for it
    general = _outcome(lambda: decode_record(record, timestamp_unit=unit))
    assert fast == general
    if fast[0] == "value":
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        assert fast[2] == epoch + timedelta(microseconds=fast[1])
        assert fast[2].tzinfo is UTC


def test_records_share_a_fields_set_that_nothing_changes() -> None:
    first, second = decode_record(raw("kinesis-modify-ms")), decode_record(raw("kinesis-insert-ms"))
    copy = first.model_copy(update={"shard_id": "shardId-1"})
    with pytest.raises(ValueError, match="frozen"):
        second.shard_id = "x"  # type: ignore[misc]
    assert copy.shard_id == "shardId-1"
    assert first.shard_id is None
    fields = set(ChangeRecord.model_fields)
    assert first.model_fields_set == second.model_fields_set == copy.model_fields_set == fields
    assert first.model_dump(exclude_unset=True).keys() == fields


@pytest.mark.parametrize(
    "shape",
    [
        lambda b64: b64 + "\n",
        lambda b64: "\n" + b64,
        lambda b64: "\t" + b64 + " \r\n",
        lambda b64: b64 + "\u3000",  # str.strip() strips Unicode spaces too
        lambda b64: (b64 + "\n").encode(),
        lambda b64: (" " + b64).encode(),
    ],
)
def test_base64_payloads_with_surrounding_whitespace(shape: Any) -> None:
    b64 = base64.b64encode(raw("kinesis-modify-ms")).decode()
    assert decode_record(shape(b64)) == decode_record(raw("kinesis-modify-ms"))


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("e30=x\n", "payload is neither a JSON object nor strict base64 of one"),
        (b"e3 0=", "payload is neither a JSON object nor strict base64 of one"),
        (b" e30=\n", "eventName must be INSERT, MODIFY or REMOVE"),  # {}
        (b"\n[1]", "payload is neither a JSON object nor strict base64 of one"),
        ("bnVsbA==\u3000", "change record must be a JSON object"),  # null
        (b" {", "payload is not valid JSON"),
    ],
)
def test_payload_errors(payload: Any, message: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_record(payload)
    assert caught.value.message == message


@pytest.mark.parametrize("digits", ["1234567890123456789012", "7"])
def test_numbers_with_thousands_of_leading_zeros_decode_exactly(digits: str) -> None:
    """CPython refuses int() of a string over 4,300 digits; leading zeros do not count."""
    doc = {
        "eventID": "z",
        "eventName": "INSERT",
        "tableName": "t",
        "dynamodb": {
            "ApproximateCreationDateTime": 1_700_000_000_000_000,
            "Keys": {"k": {"N": "1"}},
            "NewImage": {"k": {"N": "1"}, "n": {"N": "0" * 5000 + digits}},
        },
    }
    record = decode_record(json.dumps(doc))
    assert record.new_image is not None and record.new_image["n"] == int(digits)
