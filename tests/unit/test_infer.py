"""Mapping inference from a sample: types per attribute, mixed and rare ones."""

from __future__ import annotations

from typing import Any

import pytest

from ddbcdc.errors import ConfigurationError
from ddbcdc.schema.infer import AttributeStats, column_name, infer_mapping
from ddbcdc.schema.mapping import parse_mapping


def describe(key: list[tuple[str, str]], name: str = "Customers") -> dict[str, Any]:
    return {
        "TableName": name,
        "KeySchema": [
            {"AttributeName": n, "KeyType": "HASH" if i == 0 else "RANGE"}
            for i, (n, _) in enumerate(key)
        ],
        "AttributeDefinitions": [{"AttributeName": n, "AttributeType": t} for n, t in key],
        "ItemCount": 3,
    }


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([{"N": "1"}, {"N": "-7"}, {"N": "1E+3"}], "bigint"),
        ([{"N": "1"}, {"N": "1.5"}], "numeric"),
        ([{"N": "9" * 20}], "numeric"),  # beyond 64 bits
        ([{"S": "a"}], "text"),
        ([{"S": "a"}, {"N": "1"}], "text"),  # text holds both exactly
        ([{"BOOL": True}, {"NULL": True}], "boolean"),  # NULL is no type
        ([{"B": "AA=="}], "bytea"),
        ([{"M": {}}], "jsonb"),
        ([{"L": []}], "jsonb"),
        ([{"SS": ["a"]}], "jsonb"),
        ([{"NS": ["1"]}, {"BS": ["AA=="]}], "jsonb"),
        ([{"S": "a"}, {"BOOL": True}], "jsonb"),  # jsonb holds anything
        ([{"NULL": True}], "text"),
    ],
)
def test_a_type_per_attribute(values: list[dict[str, Any]], expected: str) -> None:
    stats = AttributeStats("x")
    for value in values:
        stats.add(value)
    assert stats.column_type() == expected


@pytest.mark.parametrize(
    ("attribute", "name"),
    [
        ("firstName", "first_name"),
        ("Phone Number", "phone_number"),
        ("user-id", "user_id"),
        ("2fa", "a_2fa"),
        ("ddbcdc_x", "attr_ddbcdc_x"),
        ("_ddbcdc_x", "attr_ddbcdc_x"),
        ("!!!", None),
        ("über", "ber"),
    ],
)
def test_column_names(attribute: str, name: str | None) -> None:
    assert column_name(attribute) == name


def test_a_mapping_from_a_sample() -> None:
    items = [
        {"UserId": {"N": "1"}, "firstName": {"S": "Ada"}, "phone": {"N": "5550100"}},
        {"UserId": {"N": "2"}, "firstName": {"S": "Alan"}, "phone": {"S": "555-0101"}},
        {"UserId": {"N": "3"}, "phone": {"N": "5550102"}, "rare": {"BOOL": True}},
    ] + [{"UserId": {"N": str(i)}, "firstName": {"S": "x"}} for i in range(4, 200)]
    doc = infer_mapping(describe([("UserId", "N")]), items, min_share=0.05)
    assert doc["key"] == ["user_id"]
    assert doc["columns"] == [
        {"name": "user_id", "source": "UserId", "type": "bigint", "required": True},
        {"name": "first_name", "source": "firstName", "type": "text"},
    ]  # phone is in 3 of 199 items: rare
    assert doc["target_table"] == "customers" and doc["extra"] == {"column": "attributes"}
    inferred = doc["inferred"]
    assert inferred["sampled_items"] == 199
    assert inferred["mixed_types"] == ["phone"]
    assert inferred["left_to_extra"] == ["phone", "rare"]
    assert inferred["attributes"]["phone"] == {
        "items": 3,
        "share": round(3 / 199, 4),
        "types": {"N": 2, "S": 1},
    }
    parse_mapping(doc, name="customers")  # a valid mapping, as written


def test_keys_from_the_key_schema() -> None:
    items = [{"pk": {"S": "a"}, "sk": {"N": "1.5"}, "blob": {"B": "AA=="}}]
    doc = infer_mapping(describe([("pk", "S"), ("sk", "N")]), items, target_table="t")
    assert doc["key"] == ["pk", "sk"]
    types = {c["name"]: c["type"] for c in doc["columns"]}
    assert types == {"pk": "text", "sk": "numeric", "blob": "bytea"}


def test_a_key_that_makes_no_column_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="makes no column"):
        infer_mapping(describe([("!!", "S")]), [])


def test_colliding_names_are_made_unique() -> None:
    items = [{"id": {"N": "1"}, "a-b": {"S": "x"}, "a_b": {"S": "y"}, "attributes": {"N": "1"}}]
    doc = infer_mapping(describe([("id", "N")]), items)
    assert [c["name"] for c in doc["columns"]] == ["id", "a_b", "a_b_2", "attributes_2"]
