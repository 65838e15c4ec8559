"""Cleanse keeps what the mapping does not name, and says why a value does not fit."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given

from attribute_strategies import ITEMS, difference
from ddbcdc.cleanse import Cleanser
from ddbcdc.decode.itemjson import decode_attributes
from ddbcdc.decode.record import ChangeRecord
from ddbcdc.errors import CleanseError
from ddbcdc.schema.mapping import parse_mapping

COLUMNS = [
    {"name": "userid", "type": "bigint"},
    {"name": "name", "source": "Name", "type": "text", "rules": ["trim"]},
    {"name": "phone", "type": "numeric"},
]


def mapping(**extra: str) -> Any:
    doc: dict[str, Any] = {
        "source_table": "customers",
        "target_table": "customers",
        "key": ["userid"],
        "columns": COLUMNS,
    }
    if extra:
        doc["extra"] = extra
    return parse_mapping(doc, name="customers")


def record(image: dict[str, Any] | None, *, event: str = "INSERT") -> ChangeRecord:
    return ChangeRecord(
        event_id="e1",
        event_name=event,
        table_name="customers",
        aws_region="us-east-1",
        keys={"userid": 8},
        new_image=image,
        old_image=None,
        approximate_creation=datetime(2026, 1, 1, tzinfo=UTC),
        approximate_creation_us=1_767_225_600_000_000,
        size_bytes=10,
        is_ttl_delete=False,
        shard_id="shardId-000",
        sequence_number="100",
    )


BOTH = Cleanser(mapping(column="attributes", item_column="item"))


def test_unmapped_attributes_and_the_whole_item_are_kept() -> None:
    image = {"userid": 8, "Name": " Ada ", "phone": 5, "city": "Oslo", "tags": {"a", "b"}}
    change = BOTH.cleanse(record(image))
    assert change.row is not None
    assert change.row["name"] == "Ada" and change.row["phone"] == Decimal(5)
    assert decode_attributes(change.row["attributes"]) == {"city": "Oslo", "tags": {"a", "b"}}
    assert decode_attributes(change.row["item"]) == image
    assert list(change.row) == ["userid", "name", "phone", "attributes", "item"]


def test_an_item_the_mapping_covers_keeps_an_empty_object() -> None:
    change = Cleanser(mapping(column="attributes")).cleanse(record({"userid": 8}))
    assert change.row is not None and change.row["attributes"] == "{}"
    assert "item" not in change.row


def test_a_remove_has_no_row_to_keep_anything_in() -> None:
    change = BOTH.cleanse(record(None, event="REMOVE"))
    assert change.row is None and change.key == (8,)


@given(ITEMS)
def test_every_item_is_kept_exactly_or_refused_naming_the_attribute(item: dict[str, Any]) -> None:
    image = {**item, "userid": 8}
    image.pop("Name", None)
    image.pop("phone", None)
    try:
        change = BOTH.cleanse(record(image))
    except CleanseError as exc:
        assert exc.column == "attributes"
        assert exc.path is not None and exc.path.startswith("dynamodb.NewImage.")
        assert "U+0000" in exc.message
        return
    assert change.row is not None
    kept = {k: v for k, v in image.items() if k != "userid"}
    assert difference(decode_attributes(change.row["attributes"]), kept) is None
    assert difference(decode_attributes(change.row["item"]), image) is None


def test_an_attribute_name_jsonb_cannot_hold_is_a_cleanse_error() -> None:
    with pytest.raises(CleanseError) as info:
        BOTH.cleanse(record({"userid": 8, "bad\x00name": 1}))
    assert info.value.column == "attributes"
    assert info.value.path == "dynamodb.NewImage.bad\x00name"
    assert info.value.reason == (
        "attribute name contains U+0000, which PostgreSQL jsonb cannot hold"
    )


@pytest.mark.parametrize(
    ("image", "column", "reason"),
    [
        ({"userid": 8, "phone": "555-1234"}, "phone", "S where numeric expected: not a number"),
        ({"userid": 8, "phone": True}, "phone", "BOOL where numeric expected"),
        ({"userid": 8, "phone": {"n": 1}}, "phone", "M where numeric expected"),
        ({"userid": 8, "Name": 5, "phone": [1]}, "phone", "L where numeric expected"),
        ({"userid": 8, "Name": b"x"}, "name", "B where text expected"),
        ({"userid": 8, "Name": {"a", "b"}}, "name", "SS where text expected"),
        ({"userid": "x"}, "userid", "S where bigint expected: a string key is not a canonical"),
        ({"Name": "x"}, "userid", "required attribute is missing"),
    ],
)
def test_a_value_that_does_not_fit_names_its_column_and_types(
    image: dict[str, Any], column: str, reason: str
) -> None:
    rec = record(image)
    if "userid" not in image:
        rec = rec.model_copy(update={"keys": {}})
    with pytest.raises(CleanseError) as info:
        BOTH.cleanse(rec)
    assert info.value.column == column
    assert info.value.reason is not None and info.value.reason.startswith(reason)
    assert "555" not in str(info.value)  # never the value


def test_kept_text_is_json_postgresql_accepts() -> None:
    image = {"userid": 8, "n": Decimal("1.10E+5"), "b": b"\x00", "z": "a\x00b"}
    change = BOTH.cleanse(record(image))
    assert change.row is not None
    doc = json.loads(change.row["attributes"])
    assert doc == {"n": 110000, "b": {"B": "AA=="}, "z": {"S": ["a", "b"]}}
    assert "\\u0000" not in change.row["attributes"]
