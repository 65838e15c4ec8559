"""Routed mappings load, and a mapping whose templates cannot keep two DynamoDB keys apart is
refused at load time naming the file, the route and the field."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ddbcdc.errors import ConfigurationError
from ddbcdc.schema.mapping import (
    load_mapping,
    load_mappings,
    mapping_differences,
    mapping_digest,
    mapping_document,
    parse_mapping,
)
from ddbcdc.schema.matches import parse_template

ROOT = Path(__file__).resolve().parents[2]
SHOP = ROOT / "schemas" / "single_table" / "shop.json"


def shop() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(SHOP.read_text())
    return doc


def write(tmp_path: Path, doc: Any) -> Path:
    path = tmp_path / "shop.json"
    path.write_text(json.dumps(doc))
    return path


def test_shipped_single_table_mapping() -> None:
    mapping = load_mapping(SHOP)
    assert mapping.target_table == "shop" and mapping.key == ("pk", "sk")
    assert mapping.versions_table == "ddbcdc_versions__shop"
    targets = [r.target_table for r in mapping.routes]
    assert targets == ["shop_customers", "shop_orders", "shop_order_lines", "shop_unmatched"]
    catch_all = mapping.catch_all
    assert catch_all is not None and catch_all.mapping.item_column == "item"
    orders = mapping.routes[1]
    assert orders.mapping.key == ("customer_id", "order_date", "order_id")
    assert orders.entity == (("_et", "order"),) and orders.by_attribute
    assert [t.text for t in orders.templates] == [
        "CUSTOMER#{customer_id}",
        "ORDER#{order_date}#{order_id}",
    ]
    by_name = {c.name: c for c in orders.mapping.columns}
    assert by_name["order_date"].type == "date" and by_name["order_date"].source == "SK"
    assert orders.mapping.path == SHOP  # errors about a route name its file


def test_a_plain_mapping_directory_next_to_a_routed_one(tmp_path: Path) -> None:
    (tmp_path / "shop.json").write_text(SHOP.read_text())
    (tmp_path / "customers.json").write_text((ROOT / "schemas/tables/customers.json").read_text())
    names = [m.name for m in load_mappings(tmp_path)]
    assert names == ["customers", "shop"]
    doc = shop()
    doc["routes"][0]["target_table"] = "customers"  # the plain mapping's table
    (tmp_path / "shop.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigurationError, match="same target_table 'customers'"):
        load_mappings(tmp_path)


def test_defaults_entity_routes_and_catch_all_off() -> None:
    doc = shop()
    doc["routes"].append({"target_table": "shop_notes", "match": {"_et": "note"}})
    doc["unmatched"] = False
    mapping = parse_mapping(doc, name="shop")
    notes = mapping.routes[-1]
    assert mapping.catch_all is None and notes.target_table == "shop_notes"
    # keyed by the DynamoDB key itself: its columns, types and all
    assert notes.mapping.key == ("pk", "sk")
    assert [t.text for t in notes.templates] == ["{pk}", "{sk}"]
    del doc["unmatched"]
    doc.pop("name")
    default = parse_mapping(doc, name="store")
    assert default.target_table == "store" and default.routes[-1].target_table == "store_unmatched"


def test_digest_is_the_document_and_differences_name_routes() -> None:
    mapping = parse_mapping(shop(), name="shop")
    again = parse_mapping(json.loads(json.dumps(mapping_document(mapping))), name="shop")
    assert mapping_digest(again) == mapping_digest(mapping)
    doc = shop()
    doc["routes"].append({"target_table": "shop_notes", "match": {"_et": "note"}})
    doc["routes"][0]["columns"].append({"name": "city", "type": "text"})
    changed = parse_mapping(doc, name="shop")
    found = mapping_differences(mapping_document(mapping), mapping_document(changed))
    assert found == ["route 'shop_notes' added", "route 'shop_customers': column 'city' added"]


@pytest.mark.parametrize(
    ("text", "literals", "placeholders"),
    [
        ("PROFILE", ("PROFILE",), ()),
        ("{pk}", ("", ""), ("pk",)),
        ("ORDER#{d}#{id}", ("ORDER#", "#", ""), ("d", "id")),
        ("A{{x}}#{id}", ("A{x}#", ""), ("id",)),
    ],
)
def test_templates_parse_and_render_back(
    text: str, literals: tuple[str, ...], placeholders: tuple[str, ...]
) -> None:
    template = parse_template("SK", text)
    assert (template.literals, template.placeholders) == (literals, placeholders)
    assert template.text == text


def _route(index: int) -> Callable[[dict[str, Any]], Any]:
    def get(doc: dict[str, Any]) -> Any:
        return doc["routes"][index]

    return get


@pytest.mark.parametrize(
    ("change", "route", "field", "words"),
    [
        # a template that drops part of the key: items differing only in SK share a row
        (lambda d: d["routes"][0]["match"].pop("SK"), "shop_customers", "match", "no template"),
        # two placeholders with nothing between them
        (
            lambda d: d["routes"][1]["match"].update(SK="ORDER#{order_date}{order_id}"),
            "shop_orders",
            "match.SK",
            "no literal text between",
        ),
        (
            lambda d: d["routes"][0]["columns"][0].update(type="numeric"),
            "shop_customers",
            "columns[0].type",
            "'7.1' and '7.10'",
        ),
        (
            lambda d: d["routes"][0]["columns"][0].update(type="timestamptz"),
            "shop_customers",
            "columns[0].type",
            "cannot be timestamptz",
        ),
        (
            lambda d: d["routes"][0]["columns"][0].update(type="bytea"),
            "shop_customers",
            "columns[0].type",
            "no one exact text",
        ),
        # a target key that does not determine the DynamoDB key
        (
            lambda d: d["routes"][0].update(key=["email"]),
            "shop_customers",
            "key",
            "would not determine",
        ),
        (
            lambda d: d["routes"][2].update(
                match={"_et": "line"},
                key=["order_id"],
                columns=[{"name": "order_id", "type": "bigint"}],
            ),
            "shop_order_lines",
            "key",
            "would not determine",
        ),
        (lambda d: d["routes"][0]["columns"].pop(0), "shop_customers", "columns", "need a column"),
        (
            lambda d: d["routes"][0]["columns"][0].update(source="id"),
            "shop_customers",
            "columns[0].source",
            "comes from its key template",
        ),
        (
            lambda d: d["routes"][1]["match"].update(PK="C#{customer_id}", SK="O#{customer_id}"),
            "shop_orders",
            "match",
            "more than once",
        ),
        (
            lambda d: d["routes"][0]["match"].update(PK="CUSTOMER#{customer_id"),
            "shop_customers",
            "match.PK",
            "placeholder",
        ),
        (lambda d: d["routes"][0].update(match={}), "shop_customers", "match", "must name"),
        (lambda d: d["routes"][0].update(filter=1), "shop_customers", "<route>", "unknown field"),
        (
            lambda d: d["routes"][0].update(deletes="soft"),
            "shop_customers",
            "<route>",
            "unknown field",
        ),
    ],
)
def test_refused_naming_file_route_and_field(
    tmp_path: Path, change: Callable[[dict[str, Any]], Any], route: str, field: str, words: str
) -> None:
    doc = copy.deepcopy(shop())
    change(doc)
    path = write(tmp_path, doc)
    with pytest.raises(ConfigurationError) as caught:
        load_mapping(path)
    message = str(caught.value)
    assert str(path) in message and f"route {route!r}" in message, message
    assert f"field {field!r}" in message and words in message, message


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (lambda d: d.update(name="shop_orders"), "routes", "named twice"),
        (
            lambda d: d.update(unmatched={"item_column": "pk"}),
            "unmatched.item_column",
            "key column",
        ),
        (lambda d: d.update(unmatched=3), "unmatched", "false to turn it off"),
        (lambda d: d["key"].pop(), "match.SK", "placeholders are for key attributes"),
        (
            lambda d: d.update(key=[{"name": "pk", "source": "PK", "type": "jsonb"}]),
            "key[0].type",
            "key",
        ),
        (lambda d: d["key"][0].update(type="bigint"), "match.PK", "matches S values"),
        (lambda d: d.update(routes=[]), "routes", "non-empty"),
        # a routed mapping deletes hard: its rows of deleted items are not kept
        (lambda d: d.update(deletes="soft"), "<root>", "unknown field(s) ['deletes']"),
        (lambda d: d.update(ttl_deletes="keep"), "<root>", "unknown field(s) ['ttl_deletes']"),
    ],
)
def test_refused_naming_file_and_field(
    tmp_path: Path, change: Callable[[dict[str, Any]], Any], field: str, words: str
) -> None:
    doc = copy.deepcopy(shop())
    change(doc)
    path = write(tmp_path, doc)
    with pytest.raises(ConfigurationError) as caught:
        load_mapping(path)
    message = str(caught.value)
    assert str(path) in message and field in message and words in message, message
