"""Routing a change of a single-table design: exact keys, first match wins, entity
attributes, the catch-all, and what a REMOVE's record can tell."""

from __future__ import annotations

import copy
import json
import re
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddbcdc.cleanse.routes import NO_ROUTE, RoutedCleanser
from ddbcdc.decode.attributes import marshal
from ddbcdc.decode.record import ChangeRecord, decode_record
from ddbcdc.errors import CleanseError
from ddbcdc.schema.mapping import parse_mapping

SHOP_DOC = json.loads(
    (Path(__file__).resolve().parents[2] / "schemas" / "single_table" / "shop.json").read_text()
)
SHOP = parse_mapping(SHOP_DOC, name="shop")
CLEANSER = RoutedCleanser(SHOP)


def record(
    event: str,
    pk: str,
    sk: str,
    image: dict[str, Any] | None = None,
    *,
    old: dict[str, Any] | None = None,
) -> ChangeRecord:
    keys = {"PK": pk, "SK": sk}
    body: dict[str, Any] = {"ApproximateCreationDateTime": 1_700_000_000_000_000}
    body["Keys"] = marshal(keys)
    if event != "REMOVE":
        body["NewImage"] = marshal({**keys, **(image or {})})
    if old is not None:
        body["OldImage"] = marshal({**keys, **old})
    doc = {"eventID": "e1", "eventName": event, "tableName": "shop", "dynamodb": body}
    return decode_record(orjson.dumps(doc))


def test_each_entity_to_its_route_with_typed_key_columns() -> None:
    customer = CLEANSER.cleanse(record("INSERT", "CUSTOMER#7", "PROFILE", {"email": " A@B "}))
    assert customer.route == "shop_customers" and customer.key == ("CUSTOMER#7", "PROFILE")
    assert customer.row is not None and customer.row["customer_id"] == 7
    assert customer.row["email"] == "a@b"
    order = CLEANSER.cleanse(
        record("INSERT", "CUSTOMER#7", "ORDER#2024-05-01#9876", {"_et": "order", "total": 5})
    )
    assert order.route == "shop_orders" and order.row is not None
    assert (order.row["customer_id"], order.row["order_date"], order.row["order_id"]) == (
        7,
        date(2024, 5, 1),
        9876,
    )
    # key attributes and the entity attribute are the route's: not kept again
    assert json.loads(order.row["attributes"]) == {}
    line = CLEANSER.cleanse(record("INSERT", "ORDER#9876", "LINE#3", {"sku": "x", "_et": "line"}))
    assert line.route == "shop_order_lines" and line.row is not None
    assert (line.row["order_id"], line.row["line_no"]) == (9876, 3)
    assert json.loads(line.row["attributes"]) == {"_et": "line"}


@pytest.mark.parametrize(
    ("pk", "sk"),
    [
        ("CUSTOMER#007", "PROFILE"),  # not customer_id = 7: that is CUSTOMER#7
        ("CUSTOMER#-0", "PROFILE"),  # not customer_id = 0
        ("CUSTOMER#+7", "PROFILE"),
        ("CUSTOMER# 7", "PROFILE"),
        ("CUSTOMER#9223372036854775808", "PROFILE"),  # beyond bigint
        ("CUSTOMER#7", "PROFILE "),
        ("CUSTOMER#7", "ORDER#2024-5-1#9"),  # not the one ISO form of the date
        ("CUSTOMER#7", "ORDER#2024-02-30#9"),  # no such date
        ("CUSTOMER#7", "ORDER#2024-05-01#09"),
        ("ORDER#1", "LINE#2147483648"),  # beyond integer
    ],
)
def test_a_key_that_does_not_convert_exactly_is_not_that_entity(pk: str, sk: str) -> None:
    change = CLEANSER.cleanse(record("INSERT", pk, sk, {"_et": "order"}))
    assert change.route == "shop_unmatched"  # kept whole in the catch-all, not lost
    assert change.row is not None and json.loads(change.row["item"])["PK"] == pk
    assert change.route_keys[:3] == (None, None, None)


def test_entity_attribute_decides_and_the_catch_all_takes_the_rest() -> None:
    cart = CLEANSER.cleanse(record("INSERT", "CUSTOMER#7", "ORDER#2024-05-01#1", {"_et": "cart"}))
    assert cart.route == "shop_unmatched"
    # its key in the orders route is known: the row an entity change takes away is there
    assert cart.route_keys[1] == (7, date(2024, 5, 1), 1)
    number = CLEANSER.cleanse(record("INSERT", "CUSTOMER#7", "ORDER#2024-05-01#1", {"_et": 1}))
    assert number.route == "shop_unmatched"  # an N is not the S "order"


def test_first_match_wins() -> None:
    doc = copy.deepcopy(SHOP_DOC)
    doc["routes"].insert(0, {"target_table": "shop_vip", "match": {"tier": "vip"}})
    cleanser = RoutedCleanser(parse_mapping(doc, name="shop"))
    vip = cleanser.cleanse(record("INSERT", "CUSTOMER#7", "PROFILE", {"tier": "vip"}))
    assert vip.route == "shop_vip" and vip.row is not None and vip.row["pk"] == "CUSTOMER#7"
    other = cleanser.cleanse(record("INSERT", "CUSTOMER#7", "PROFILE", {"tier": "gold"}))
    assert other.route == "shop_customers"


def test_what_a_remove_can_tell_of_its_route() -> None:
    customer = CLEANSER.cleanse(record("REMOVE", "CUSTOMER#7", "PROFILE"))
    assert customer.route == "shop_customers" and customer.row is None  # the key says it
    order = CLEANSER.cleanse(record("REMOVE", "CUSTOMER#7", "ORDER#2024-05-01#1"))
    assert order.route is None  # an order or a cart: only PostgreSQL knows
    assert order.route_keys[1] == (7, date(2024, 5, 1), 1)
    assert order.route_keys[3] == ("CUSTOMER#7", "ORDER#2024-05-01#1")
    with_old = CLEANSER.cleanse(
        record("REMOVE", "CUSTOMER#7", "ORDER#2024-05-01#1", old={"_et": "order"})
    )
    assert with_old.route == "shop_orders"
    odd = CLEANSER.cleanse(record("REMOVE", "CUSTOMER#x", "PROFILE"))
    assert odd.route == "shop_unmatched"


@pytest.mark.parametrize(
    ("pk", "sk"),
    [
        ("CUSTOMER#7", "PROFILE"),
        ("CUSTOMER#7", "ORDER#2024-05-01#1"),
        ("ORDER#3", "LINE#2"),
        ("CUSTOMER#x", "PROFILE"),
        ("CUSTOMER#07", "ORDER#2024-05-01#1"),
    ],
)
def test_a_remove_carries_its_key_in_every_route(pk: str, sk: str) -> None:
    """The keys found while naming a REMOVE's route are each route's own, in route order."""
    change = CLEANSER.cleanse(record("REMOVE", pk, sk))
    assert tuple(change.route_keys) == tuple(CLEANSER.route_keys({"PK": pk, "SK": sk}))
    assert change.route_keys[3] == (pk, sk)


def test_without_a_catch_all_an_unmatched_item_is_poison_and_a_remove_is_not() -> None:
    doc = copy.deepcopy(SHOP_DOC)
    doc["unmatched"] = False
    cleanser = RoutedCleanser(parse_mapping(doc, name="shop"))
    with pytest.raises(CleanseError) as caught:
        cleanser.cleanse(record("INSERT", "CUSTOMER#7", "ORDER#2024-05-01#1", {"_et": "cart"}))
    assert caught.value.reason == NO_ROUTE
    removed = cleanser.cleanse(record("REMOVE", "NOTE#1", "X"))
    assert removed.route is None and removed.route_keys == (None, None, None)


def test_a_value_that_does_not_fit_names_the_route_table() -> None:
    with pytest.raises(CleanseError) as caught:
        CLEANSER.cleanse(record("INSERT", "ORDER#1", "LINE#1", {"quantity": "many", "sku": "x"}))
    error = caught.value
    assert error.table == "shop_order_lines" and error.column == "quantity"
    assert error.path == "dynamodb.NewImage.quantity"
    assert "many" not in str(error)  # errors never carry values


def test_a_dynamodb_key_that_cannot_be_a_row_is_poison() -> None:
    with pytest.raises(CleanseError, match="U\\+0000"):
        CLEANSER.cleanse(record("INSERT", "CUSTOMER#\x00", "PROFILE"))


# -- the compiled key functions against the templates' definition ---------------------------

_TYPED = {
    "smallint": (r"0|-?[1-9][0-9]*", 15),
    "integer": (r"0|-?[1-9][0-9]*", 31),
    "bigint": (r"0|-?[1-9][0-9]*", 63),
    "date": (r"[0-9]{4}-[0-9]{2}-[0-9]{2}", None),
    "text": (r".*", None),
}
_KEYED = parse_mapping(
    {
        "source_table": "t",
        "key": [
            {"name": "pk", "source": "PK", "type": "text"},
            {"name": "sk", "source": "SK", "type": "text"},
        ],
        "routes": [
            {
                "target_table": "pairs",
                "match": {"PK": "P#{a}#{b}", "SK": "{c}~{d}"},
                "columns": [
                    {"name": "a", "type": "smallint"},
                    {"name": "b", "type": "bigint"},
                    {"name": "c", "type": "date"},
                    {"name": "d", "type": "text"},
                ],
            },
            {
                "target_table": "tails",
                "match": {"PK": "N#{n}", "SK": "X"},
                "columns": [{"name": "n", "type": "integer"}],
            },
        ],
    },
    name="t",
)


def _reference_key(route_index: int, keys: dict[str, Any]) -> tuple[Any, ...] | None:
    """A route's key by its definition: each template as one pattern, each placeholder
    converted exactly, or no key."""
    route = _KEYED.routes[route_index]
    types = {c.name: c.type for c in route.mapping.columns}
    found: dict[str, Any] = {}
    for template in route.templates:
        value = keys.get(template.attribute)
        pattern = re.escape(template.literals[0])
        for name, literal in zip(template.placeholders, template.literals[1:], strict=True):
            pattern += f"({_TYPED[types[name]][0]})" + re.escape(literal)
        matched = re.fullmatch(pattern, value, re.DOTALL) if isinstance(value, str) else None
        if matched is None:
            return None
        for name, text in zip(template.placeholders, matched.groups(), strict=True):
            kind, bits = types[name], _TYPED[types[name]][1]
            try:
                converted: Any = date.fromisoformat(text) if kind == "date" else text
                if bits is not None:
                    converted = int(text)
            except ValueError:
                return None
            if bits is not None and not -(2**bits) <= converted < 2**bits:
                return None
            found[name] = converted
    return tuple(found[k] for k in route.mapping.key)


_PIECES = st.sampled_from(
    ["0", "00", "7", "07", "-", "-0", "-7", "+7", " ", "#", "~", "²", "٣", "X", "1" * 4400]
)
_TEXTS = st.lists(_PIECES, max_size=3).map("".join)
_BOUNDS = [2**15, 2**31, 2**63]
_NUMBERS = st.one_of(
    _TEXTS, st.sampled_from([n + d for b in _BOUNDS for n in (b, -b) for d in (-1, 0)]).map(str)
)
_DATES = st.one_of(_TEXTS, st.dates().map(str), st.just("2024-02-30"), st.just("2024-5-1"))
#: Keys near each template (its literals, values near the types' bounds) and any others.
_PKS = st.one_of(
    _TEXTS, st.builds("P#{}#{}".format, _NUMBERS, _NUMBERS), st.builds("N#{}".format, _NUMBERS)
)
_SKS = st.one_of(_TEXTS, st.builds("{}~{}".format, _DATES, _TEXTS), st.just("X"))


@settings(max_examples=500, deadline=None)
@given(pk=_PKS, sk=_SKS)
def test_compiled_route_keys_agree_with_the_templates(pk: str, sk: str) -> None:
    keys = {"PK": pk, "SK": sk}
    found = RoutedCleanser(_KEYED).route_keys(keys)
    wanted = [_reference_key(i, keys) for i in range(2)]
    assert tuple(found) == (*wanted, (pk, sk))  # the catch-all: any key
