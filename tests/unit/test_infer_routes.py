"""A routed mapping inferred from a sample of a single-table design: one route per group
the key patterns and the entity attribute tell apart, with key templates and columns."""

from __future__ import annotations

from typing import Any

from ddbcdc.decode.attributes import marshal
from ddbcdc.schema.infer_routes import infer_routes, single_table_design
from ddbcdc.schema.mapping import parse_mapping

SHOP = {
    "TableName": "Shop-Table",
    "KeySchema": [
        {"AttributeName": "PK", "KeyType": "HASH"},
        {"AttributeName": "SK", "KeyType": "RANGE"},
    ],
    "AttributeDefinitions": [
        {"AttributeName": "PK", "AttributeType": "S"},
        {"AttributeName": "SK", "AttributeType": "S"},
    ],
}


def sample() -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for c in range(1, 41):
        items.append({"PK": f"CUSTOMER#{c}", "SK": "PROFILE", "_et": "customer", "name": "n"})
        for o in range(2):
            order = c * 10 + o
            entity = "cart" if o else "order"
            sk = f"ORDER#2024-05-{o + 1:02d}#{order}"
            items.append({"PK": f"CUSTOMER#{c}", "SK": sk, "_et": entity, "total": c})
            items.append({"PK": f"ORDER#{order}", "SK": "LINE#1", "_et": "line", "sku": "x"})
    items.append({"PK": "NOTE#abc", "SK": "NOTE", "_et": "note", "text": "rare"})
    return [marshal(i) for i in items]


def test_routes_templates_and_the_entity_only_where_the_key_does_not_tell() -> None:
    items = sample()
    assert single_table_design(SHOP, items)
    doc = infer_routes(SHOP, items)
    mapping = parse_mapping(doc, name=doc["name"])  # a valid routed mapping
    assert doc["name"] == "shop_table" and mapping.catch_all is not None
    by_target = {r["target_table"]: r for r in doc["routes"]}
    assert set(by_target) == {
        "shop_table_order",
        "shop_table_cart",
        "shop_table_line",
        "shop_table_customer",
    }
    # orders and carts share a key shape: the entity attribute tells them apart
    assert by_target["shop_table_order"]["match"] == {
        "PK": "CUSTOMER#{customer_id}",
        "SK": "ORDER#{order_date}#{order_id}",
        "_et": "order",
    }
    assert by_target["shop_table_cart"]["match"]["_et"] == "cart"
    # a customer's or a line's key tells the entity alone: REMOVEs find them by key
    assert by_target["shop_table_customer"]["match"] == {
        "PK": "CUSTOMER#{customer_id}",
        "SK": "PROFILE",
    }
    columns = {c["name"]: c["type"] for c in by_target["shop_table_order"]["columns"]}
    assert columns["customer_id"] == "bigint" and columns["order_date"] == "date"
    assert columns["order_id"] == "bigint" and columns["total"] == "bigint"
    assert "_et" not in columns
    # more key parts first: first match wins
    assert doc["routes"][0]["match"]["SK"].startswith("ORDER#")
    assert doc["inferred"]["entity_attribute"] == "_et"
    assert doc["inferred"]["left_to_unmatched"] == [{"items": 1, "entity": None}]


def test_placeholder_types_fall_back_to_text() -> None:
    items = [
        marshal({"PK": f"USER#{name}", "SK": f"V#{version}"})
        for name, version in [("ann", "1"), ("bob", "007"), ("cy", "2")]
    ]
    items += [marshal({"PK": f"GROUP#{n}", "SK": "META"}) for n in range(3)]
    doc = infer_routes(SHOP, items)
    (user,) = [r for r in doc["routes"] if r["match"]["PK"] == "USER#{user_id}"]
    types = {c["name"]: c["type"] for c in user["columns"]}
    assert types == {"user_id": "text", "v_id": "text"}  # "007" is no canonical integer


def test_a_plain_table_is_not_a_single_table_design() -> None:
    plain = {
        "TableName": "customers",
        "KeySchema": [{"AttributeName": "userid", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "userid", "AttributeType": "N"}],
    }
    items = [marshal({"userid": n, "name": "x"}) for n in range(10)]
    assert not single_table_design(plain, items)
    ids = [marshal({"PK": f"user-{n}", "SK": "x"}) for n in range(10)]
    assert not single_table_design(SHOP, ids)
