"""Table mappings: the shipped one loads; bad ones are refused naming file and field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ddbcdc.errors import ConfigurationError
from ddbcdc.schema.mapping import (
    TableMapping,
    load_mapping,
    load_mappings,
    mapping_differences,
    mapping_digest,
    mapping_document,
    parse_mapping,
)

SHIPPED = Path(__file__).resolve().parents[2] / "schemas" / "tables"


def good() -> dict[str, Any]:
    return {
        "source_table": "Orders",
        "target_table": "orders",
        "key": ["order_id"],
        "columns": [
            {"name": "order_id", "source": "OrderId", "type": "text"},
            {"name": "total", "type": "numeric", "required": True},
            {"name": "email", "type": "text", "rules": ["trim", "lowercase"], "default": "x@y"},
        ],
    }


def write(tmp_path: Path, doc: Any, name: str = "orders.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return path


def test_shipped_customers_mapping() -> None:
    (customers,) = load_mappings(SHIPPED)
    assert customers.source_table == "customers"
    assert customers.target_table == "customers"
    assert customers.key == ("userid",)
    cols = {c.name: c for c in customers.columns}
    assert cols["userid"].type == "bigint" and cols["userid"].required
    assert cols["phone"].type == "text" and cols["phone"].rules == ("digits_only",)
    assert cols["first_name"].rules == ("trim",) and not cols["first_name"].required
    assert customers.versions_table == "ddbcdc_versions__customers"


def test_good_mapping_defaults(tmp_path: Path) -> None:
    mapping = load_mapping(write(tmp_path, good()))
    assert isinstance(mapping, TableMapping)
    assert mapping.name == "orders" and mapping.path == tmp_path / "orders.json"
    by_name = {c.name: c for c in mapping.columns}
    assert by_name["order_id"].source == "OrderId"
    assert by_name["order_id"].required  # key columns always are
    assert by_name["email"].source == "email" and by_name["email"].default == "x@y"
    assert not mapping.change_log


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (lambda d: d["columns"][1].update(type="float8"), "columns[1].type", "unknown type"),
        (lambda d: d.update(key=["nope"]), "key", "missing"),
        (lambda d: d.update(key=[]), "key", "non-empty"),
        (lambda d: d.update(target_table="Orders"), "target_table", "identifier"),
        (lambda d: d.update(target_table="x; drop"), "target_table", "identifier"),
        (lambda d: d.update(target_table="o" * 40), "target_table", "longer"),
        (lambda d: d["columns"][0].update(name="_ddbcdc_x"), "columns[0].name", "reserved"),
        (lambda d: d["columns"][0].update(name='a"b'), "columns[0].name", "identifier"),
        (lambda d: d.update(colums=[]), "<root>", "unknown field"),
        (lambda d: d["columns"][1].update(rules=["trim"]), "columns[1].rules", "text columns"),
        (lambda d: d["columns"][2].update(rules=["shout"]), "columns[2].rules", "each rule"),
        (lambda d: d["columns"].append({"name": "total", "type": "text"}), "columns", "duplicate"),
        (lambda d: d.update(change_log="yes"), "change_log", "true or false"),
        (lambda d: d.pop("source_table"), "source_table", "non-empty"),
        # Key columns keep distinct DynamoDB items distinct.
        (lambda d: d["columns"][0].update(rules=["trim"]), "columns[0].rules", "no rules"),
        (lambda d: d["columns"][0].update(rules=["lowercase"]), "columns[0].rules", "no rules"),
        (lambda d: d["columns"][0].update(rules=["digits_only"]), "columns[0].rules", "no rules"),
        (lambda d: d["columns"][0].update(type="jsonb"), "columns[0].type", "cannot be jsonb"),
        (
            lambda d: d["columns"][0].update(type="timestamptz"),
            "columns[0].type",
            "cannot be timestamptz",
        ),
        (lambda d: d["columns"][0].update(type="boolean"), "columns[0].type", "cannot be"),
        (lambda d: d["columns"][0].update(default="x"), "columns[0].default", "no default"),
        (
            lambda d: d.update(key=["order_id", "email"]),
            "columns[2].rules",
            "no rules",
        ),
    ],
)
def test_invalid_mapping_names_file_and_field(
    tmp_path: Path, change: Any, field: str, words: str
) -> None:
    doc = good()
    change(doc)
    path = write(tmp_path, doc)
    with pytest.raises(ConfigurationError) as info:
        load_mapping(path)
    message = str(info.value)
    assert str(path) in message
    assert repr(field) in message
    assert words in message


def test_bad_json_names_file(tmp_path: Path) -> None:
    path = write(tmp_path, "{not json")
    with pytest.raises(ConfigurationError, match="cannot read JSON") as info:
        load_mapping(path)
    assert str(path) in str(info.value)


def test_directory_rules(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no table mappings"):
        load_mappings(tmp_path)
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_mappings(tmp_path / "absent")
    write(tmp_path, good(), "a.json")
    other = good()
    other["source_table"] = "Other"
    write(tmp_path, other, "b.json")
    with pytest.raises(ConfigurationError, match="same target_table 'orders'"):
        load_mappings(tmp_path)


def test_parse_mapping_without_file() -> None:
    mapping = parse_mapping(good(), name="orders")
    assert mapping.path is None and [c.name for c in mapping.key_columns] == ["order_id"]


def test_shipped_customers_mapping_keeps_unmapped_attributes() -> None:
    (customers,) = load_mappings(SHIPPED)
    assert customers.extra_column == "attributes" and customers.item_column is None
    assert customers.stored_columns == ("userid", "first_name", "last_name", "phone", "attributes")


def test_extra_columns_come_after_the_mapped_ones() -> None:
    doc = good() | {"extra": {"item_column": "item", "column": "rest"}, "inferred": {"x": 1}}
    mapping = parse_mapping(doc, name="orders")
    assert (mapping.extra_column, mapping.item_column) == ("rest", "item")
    assert mapping.stored_columns == ("order_id", "total", "email", "rest", "item")
    only_item = parse_mapping(good() | {"extra": {"item_column": "item"}}, name="orders")
    assert only_item.extra_column is None and only_item.stored_columns[-1] == "item"


@pytest.mark.parametrize(
    ("extra", "field", "words"),
    [
        ({}, "extra", "must be an object"),
        ("attributes", "extra", "must be an object"),
        ({"columns": "x"}, "extra", "unknown field"),
        ({"column": "total"}, "extra.column", "already a column"),
        ({"column": "x", "item_column": "x"}, "extra.item_column", "already a column"),
        ({"column": "Attributes"}, "extra.column", "identifier"),
        ({"column": "ddbcdc_rest"}, "extra.column", "reserved"),
    ],
)
def test_invalid_extra_names_the_field(extra: Any, field: str, words: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_mapping(good() | {"extra": extra}, name="orders")
    assert repr(field) in str(info.value) and words in str(info.value)


def test_the_digest_is_of_the_normalized_mapping() -> None:
    base = parse_mapping(good(), name="orders")
    spelled_out = good()
    spelled_out["columns"][1] |= {"source": "total", "rules": [], "default": None}
    spelled_out |= {"change_log": False, "inferred": {"seen": 3}}
    assert mapping_digest(parse_mapping(spelled_out, name="other")) == mapping_digest(base)
    changed = good()
    changed["columns"][1]["type"] = "bigint"
    assert mapping_digest(parse_mapping(changed, name="orders")) != mapping_digest(base)
    with_extra = parse_mapping(good() | {"extra": {"column": "rest"}}, name="orders")
    assert mapping_digest(with_extra) != mapping_digest(base)


def test_differences_say_what_changed_from_one_mapping_to_the_other() -> None:
    old = mapping_document(parse_mapping(good(), name="orders"))
    doc = good() | {"extra": {"column": "rest"}, "change_log": True}
    doc["columns"] = [
        doc["columns"][0],
        {"name": "total", "type": "bigint", "required": True},
        {"name": "city", "type": "text"},
    ]
    new = mapping_document(parse_mapping(doc, name="orders"))
    assert mapping_differences(old, new) == [
        "change_log False -> True",
        "extra {'column': None, 'item_column': None} -> {'column': 'rest', 'item_column': None}",
        "column 'email' removed",
        "column 'city' added",
        "column 'total': type 'numeric' -> 'bigint'",
    ]
    assert mapping_differences(old, old) == []
