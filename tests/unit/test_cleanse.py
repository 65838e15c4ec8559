"""Cleanse: change records -> validated rows, or CleanseError with the attribute path."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from ddbcdc.cleanse import Cleanser, cleanse_record, version_of
from ddbcdc.decode.record import ChangeRecord
from ddbcdc.errors import CleanseError, ConfigurationError
from ddbcdc.schema.mapping import load_mappings, parse_mapping

SHIPPED = Path(__file__).resolve().parents[2] / "schemas" / "tables"
CUSTOMERS = load_mappings(SHIPPED)[0]

RICH = parse_mapping(
    {
        "source_table": "rich",
        "target_table": "rich",
        "key": ["id", "part"],
        "columns": [
            {"name": "id", "type": "bigint"},
            {"name": "part", "type": "text"},
            {"name": "small", "type": "smallint"},
            {"name": "amount", "type": "numeric"},
            {"name": "flag", "type": "boolean", "default": False},
            {"name": "blob", "type": "bytea"},
            {"name": "doc", "type": "jsonb"},
            {"name": "at", "type": "timestamptz"},
            {"name": "email", "type": "text", "rules": ["trim", "lowercase"], "required": True},
        ],
    },
    name="rich",
)


def record(
    new_image: dict[str, Any] | None,
    *,
    keys: dict[str, Any] | None = None,
    event: str = "MODIFY",
    us: int = 1_700_000_000_000_000,
    seq: str | None = "100",
    event_id: str = "e1",
    table: str = "customers",
) -> ChangeRecord:
    return ChangeRecord(
        event_id=event_id,
        event_name=event,
        table_name=table,
        aws_region="us-east-1",
        keys=keys if keys is not None else {"userid": 8},
        new_image=new_image,
        old_image=None,
        approximate_creation=datetime.fromtimestamp(us / 1e6, UTC),
        approximate_creation_us=us,
        size_bytes=10,
        is_ttl_delete=False,
        shard_id="shardId-000",
        sequence_number=seq,
    )


def test_customers_row_is_cleansed() -> None:
    image = {"userid": 8, "first_name": "  Ada ", "last_name": "Lovelace", "phone": 8}
    change = cleanse_record(record(image), CUSTOMERS)
    assert change.key == (8,)
    assert change.row == {
        "userid": 8,
        "first_name": "Ada",
        "last_name": "Lovelace",
        "phone": "8",
        "attributes": "{}",
    }
    assert change.version == (1_700_000_000_000_000, 100, "e1")
    assert change.sequence == 100 and change.event_name == "MODIFY"


def test_phone_digits_only_and_empty_becomes_null() -> None:
    cleanser = Cleanser(CUSTOMERS)
    row = cleanser.cleanse(record({"userid": 1, "phone": "+1 (555) 010-99"})).row
    assert row is not None and row["phone"] == "155501099"
    row = cleanser.cleanse(record({"userid": 1, "phone": "n/a"})).row
    assert row is not None and row["phone"] is None
    row = cleanser.cleanse(record({"userid": 1, "phone": Decimal("5.0E+3")})).row
    assert row is not None and row["phone"] == "5000"
    row = cleanser.cleanse(record({"userid": Decimal("1E+1")})).row
    assert row is not None and row["userid"] == 10 and row["first_name"] is None


def test_remove_takes_the_key_from_keys() -> None:
    change = cleanse_record(record(None, keys={"userid": 42}, event="REMOVE"), CUSTOMERS)
    assert change.row is None and change.key == (42,)


def test_key_falls_back_to_keys_when_image_lacks_it() -> None:
    change = cleanse_record(record({"first_name": "x"}, keys={"userid": 3}), CUSTOMERS)
    assert change.key == (3,) and change.row is not None and change.row["userid"] == 3


@pytest.mark.parametrize(
    ("image", "keys", "path", "words"),
    [
        ({"first_name": "x"}, {}, "dynamodb.NewImage.userid", "missing"),
        ({"userid": "abc"}, None, "dynamodb.NewImage.userid", "not a canonical integer"),
        # "-0" would be the row of "0": two DynamoDB keys, one row
        ({"userid": "-0"}, None, "dynamodb.NewImage.userid", "not a canonical integer"),
        ({"userid": True}, None, "dynamodb.NewImage.userid", "expected a number"),
        ({"userid": 2**63}, None, "dynamodb.NewImage.userid", "out of range"),
        ({"userid": Decimal("1.5")}, None, "dynamodb.NewImage.userid", "not an integer"),
        ({"userid": 1, "phone": {"a": 1}}, None, "dynamodb.NewImage.phone", "expected a string"),
        ({"userid": 1, "last_name": "a\x00b"}, None, "dynamodb.NewImage.last_name", "U+0000"),
    ],
)
def test_poison_records_name_the_attribute(
    image: dict[str, Any], keys: dict[str, Any] | None, path: str, words: str
) -> None:
    with pytest.raises(CleanseError) as info:
        cleanse_record(record(image, keys=keys), CUSTOMERS)
    assert info.value.path == path
    assert words in str(info.value)
    assert info.value.shard_id == "shardId-000" and info.value.sequence_number == "100"


def test_remove_without_key_and_insert_without_image() -> None:
    with pytest.raises(CleanseError) as info:
        cleanse_record(record(None, keys={}, event="REMOVE"), CUSTOMERS)
    assert info.value.path == "dynamodb.Keys.userid"
    with pytest.raises(CleanseError) as info:
        cleanse_record(record(None, event="INSERT"), CUSTOMERS)
    assert info.value.path == "dynamodb.NewImage"


def test_rich_types_are_exact() -> None:
    image = {
        "id": 1,
        "part": "a",
        "small": 7,
        "amount": Decimal("123.4500"),
        "blob": bytes(range(256)),
        "doc": {"n": Decimal("1.10E+5"), "s": {"b", "a"}, "l": [1, None, True], "b": b"\x01"},
        "at": "2024-01-02T03:04:05.123456",
        "email": "  Ada@Example.COM ",
    }
    row = cleanse_record(record(image, table="rich"), RICH).row
    assert row is not None
    assert row["amount"] == Decimal("123.4500") and str(row["amount"]) == "123.4500"
    assert row["blob"] == bytes(range(256))
    assert row["doc"] == '{"n":1.10E+5,"s":["a","b"],"l":[1,null,true],"b":"AQ=="}'
    assert row["at"] == datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    assert row["email"] == "ada@example.com"
    assert row["flag"] is False  # the default
    epoch = cleanse_record(record({**image, "at": Decimal("1.5")}, table="rich"), RICH).row
    assert epoch is not None and epoch["at"] == datetime(1970, 1, 1, 0, 0, 1, 500000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("column", "value", "words"),
    [
        ("small", 40000, "out of range"),
        ("amount", 1.5, "expected a number"),
        ("flag", 1, "expected bool"),
        ("blob", "AQ==", "expected bytes"),
        ("at", "yesterday", "ISO-8601"),
        # 38 digits: finer than microseconds in the 29th (28 digits would round it away)
        ("at", Decimal("1700000000.1234560000000000000000001"), "finer than microseconds"),
        ("email", "   ", "null or empty"),
    ],
)
def test_rich_type_errors(column: str, value: Any, words: str) -> None:
    image = {"id": 1, "part": "a", "email": "a@b", column: value}
    with pytest.raises(CleanseError) as info:
        cleanse_record(record(image, table="rich"), RICH)
    assert info.value.path == f"dynamodb.NewImage.{column}"
    assert words in str(info.value)


def test_bad_default_is_a_configuration_error() -> None:
    bad = parse_mapping(
        {
            "source_table": "t",
            "target_table": "t",
            "key": ["id"],
            "columns": [
                {"name": "id", "type": "bigint"},
                {"name": "n", "type": "integer", "default": "many"},
            ],
        },
        name="t",
    )
    with pytest.raises(ConfigurationError, match=r"columns\.n\.default"):
        Cleanser(bad)


def test_versions_order_by_time_then_sequence_then_event_id() -> None:
    base = record({"userid": 1})
    later = record({"userid": 1}, us=base.approximate_creation_us + 1, seq="1")
    same_us_higher_seq = record({"userid": 1}, seq="101")
    no_seq = record({"userid": 1}, seq=None, event_id="zzz")
    tie_id = record({"userid": 1}, seq="100", event_id="e2")
    v = {
        name: version_of(r)[0]
        for name, r in [
            ("base", base),
            ("later", later),
            ("seq", same_us_higher_seq),
            ("none", no_seq),
            ("id", tie_id),
        ]
    }
    assert v["none"] < v["base"] < v["id"] < v["seq"] < v["later"]
    assert version_of(no_seq)[1] is None
    assert version_of(record({"userid": 1}, seq="9" * 56))[1] == int("9" * 56)
