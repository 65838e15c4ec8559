"""ddbcdc.decode.attributes: exact values, strict errors with paths, round trips, boto3."""

from __future__ import annotations

import base64
import contextlib
from decimal import Decimal, DecimalException
from typing import Any

import pytest
from boto3.dynamodb.types import Binary, TypeDeserializer
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from attribute_strategies import ATTRIBUTE_MAPS, ITEMS, JSON, LARGEST, NUMBER_TEXTS, identical
from ddbcdc import DecodeError, marshal, unmarshal
from ddbcdc.decode.attributes import MAX_DEPTH, marshal_value, unmarshal_value
from property_budget import examples


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8", 8),
        ("-42", -42),
        ("0", 0),
        ("-0", 0),
        ("+5", 5),
        ("00012", 12),
        ("12345678901234567890123456789012345678", 12345678901234567890123456789012345678),
        ("1" + "0" * 125, 10**125),
        ("0" * 5000 + "1", 1),  # leading zeros do not count, nor trip int()'s digit limit
    ],
)
def test_integer_literals_become_int(text: str, expected: int) -> None:
    value = unmarshal_value({"N": text})
    assert type(value) is int
    assert value == expected


@pytest.mark.parametrize(
    "text",
    ["1.10E+5", "123.4500", "1E-130", LARGEST, "-1.5", "0.000001", "1E+3", "2.50", "0.0"],
)
def test_other_numbers_become_the_exact_decimal_and_write_back_identically(text: str) -> None:
    value = unmarshal_value({"N": text})
    assert type(value) is Decimal
    assert value.as_tuple() == Decimal(text).as_tuple()
    assert str(value) == text
    assert marshal_value(value) == {"N": text}


def test_lowercase_exponent_keeps_its_digits_and_exponent() -> None:
    value = unmarshal_value({"N": "1e3"})
    assert value.as_tuple() == Decimal("1E+3").as_tuple()
    assert marshal_value(value) == {"N": "1E+3"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "literal"),
        (".", "literal"),
        ("+", "literal"),
        ("1_000", "literal"),
        (" 1", "literal"),
        ("1 ", "literal"),
        ("\u0661", "literal"),  # Arabic-Indic one: int() would take it
        ("NaN", "literal"),
        ("Infinity", "literal"),
        ("0x1", "literal"),
        ("1e", "literal"),
        ("--1", "literal"),
        ("123456789012345678901234567890123456789", "38 significant"),
        ("1.23456789012345678901234567890123456789", "38 significant"),
        ("1E-131", "range"),
        ("1E+126", "range"),
        ("1" + "0" * 126, "range"),
        ("1E+99999999999999999999", "range"),
        ("0E-200", "range"),
    ],
)
def test_bad_numbers_raise_with_the_path(text: str, message: str) -> None:
    with pytest.raises(DecodeError, match=message) as caught:
        unmarshal({"price": {"N": text}})
    assert caught.value.path == "price.N"


def test_number_must_be_a_string() -> None:
    with pytest.raises(DecodeError, match="string") as caught:
        unmarshal({"n": {"N": 8}})
    assert caught.value.path == "n.N"


def test_binary_is_strict_canonical_base64() -> None:
    every_byte = bytes(range(256))
    assert unmarshal_value({"B": base64.b64encode(every_byte).decode()}) == every_byte
    assert unmarshal_value({"B": ""}) == b""
    assert unmarshal_value({"B": b"\x00raw"}) == b"\x00raw"  # GetRecords via boto3: bytes
    for bad in ("YQ", "YQ==\n", "Y Q==", "YR==", "not base64!", "ÿÿÿÿ", "=YQ="):
        with pytest.raises(DecodeError, match="base64") as caught:
            unmarshal({"photo": {"B": bad}})
        assert caught.value.path == "photo.B"


def test_every_type() -> None:
    item = unmarshal(
        {
            "s": {"S": ""},
            "t": {"BOOL": True},
            "f": {"BOOL": False},
            "z": {"NULL": True},
            "ss": {"SS": ["b", "a"]},
            "ns": {"NS": ["1", "2.50"]},
            "bs": {"BS": ["AAEC", "/w=="]},
            "l": {"L": []},
            "m": {"M": {}},
            "deep": {"M": {"a": {"L": [{"M": {"b": {"L": [{"S": "x"}, {"N": "3"}]}}}]}}},
        }
    )
    assert item == {
        "s": "",
        "t": True,
        "f": False,
        "z": None,
        "ss": {"a", "b"},
        "ns": {1, Decimal("2.50")},
        "bs": {b"\x00\x01\x02", b"\xff"},
        "l": [],
        "m": {},
        "deep": {"a": [{"b": ["x", 3]}]},
    }
    assert type(item["t"]) is bool


@pytest.mark.parametrize(
    ("attribute", "path", "message"),
    [
        ({"a": {"SS": []}}, "a.SS", "empty"),
        ({"a": {"NS": ["1", "1.0"]}}, "a.NS", "twice"),
        ({"a": {"SS": ["x", 1]}}, "a.SS[1]", "string"),
        ({"a": {"NS": ["1", "x"]}}, "a.NS[1]", "literal"),
        ({"a": {"NULL": False}}, "a.NULL", "true"),
        ({"a": {"BOOL": "true"}}, "a.BOOL", "BOOL"),
        ({"a": {"S": 1}}, "a.S", "S must be"),
        ({"a": {"X": "1"}}, "a", "unknown"),
        ({"a": {}}, "a", "exactly one"),
        ({"a": {"S": "x", "N": "1"}}, "a", "exactly one"),
        ({"a": "bare"}, "a", "object"),
        ({"a": {"L": {}}}, "a.L", "array"),
        ({"a": {"M": []}}, "a.M", "object"),
        (
            {"a": {"M": {"b": {"L": [{"S": "x"}, {"S": "y"}, {"N": "1.2.3"}]}}}},
            "a.M.b.L[2].N",
            "literal",
        ),
    ],
)
def test_errors_name_the_attribute_path(attribute: Any, path: str, message: str) -> None:
    with pytest.raises(DecodeError, match=message) as caught:
        unmarshal(attribute, path="dynamodb.NewImage")
    assert caught.value.path == f"dynamodb.NewImage.{path}"


def test_not_a_map_and_non_string_names() -> None:
    with pytest.raises(DecodeError):
        unmarshal(["a"])  # type: ignore[arg-type]
    with pytest.raises(DecodeError, match="name"):
        unmarshal({1: {"S": "x"}})  # type: ignore[dict-item]


def _nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"S": "bottom"}
    for level in range(levels):
        value = {"M": {"x": value}} if level % 2 else {"L": [value]}
    return {"top": value}


def test_nesting_up_to_32_levels_and_no_further() -> None:
    python = unmarshal(_nested(MAX_DEPTH))
    assert marshal(python) == _nested(MAX_DEPTH)
    with pytest.raises(DecodeError, match="deeper"):
        unmarshal(_nested(MAX_DEPTH + 1))
    with pytest.raises(DecodeError, match="deeper"):
        unmarshal(_nested(5000))
    too_deep: list[Any] = []
    for _ in range(MAX_DEPTH):
        too_deep = [too_deep]
    with pytest.raises(DecodeError, match="deeper"):
        marshal({"top": too_deep})
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(DecodeError, match="deeper"):
        marshal({"loop": loop})


def test_marshal_writes_sorted_sets_and_refuses_what_dynamodb_cannot_hold() -> None:
    assert marshal({"s": {"b", "a"}, "n": {Decimal("2.5"), 1, -3}, "b": {b"\xff", b"\x00"}}) == {
        "s": {"SS": ["a", "b"]},
        "n": {"NS": ["-3", "1", "2.5"]},
        "b": {"BS": ["AA==", "/w=="]},
    }
    assert marshal({"t": True, "i": 1}) == {"t": {"BOOL": True}, "i": {"N": "1"}}
    for bad, message in [
        (1.5, "float"),
        (Decimal("NaN"), "finite"),
        (Decimal("Infinity"), "finite"),
        ({Decimal("NaN"), Decimal(1), 2}, "finite"),  # a NaN in a set cannot be sorted
        ({Decimal("-Infinity"), 1}, "finite"),
        (set(), "empty"),
        ({"a", 1}, "only"),
        ({True}, "only"),
        (10**126, "range"),
        (10**500, "range"),
        (Decimal("1E-131"), "range"),
        (Decimal("1.23456789012345678901234567890123456789"), "38"),
        (object(), "cannot"),
    ]:
        with pytest.raises(DecodeError, match=message) as caught:
            marshal({"x": {"y": [bad]}})
        assert caught.value.path == "x.y[0]"
    with pytest.raises(DecodeError, match="name"):
        marshal({1: "x"})  # type: ignore[dict-item]


# ------------------------------------------------------------------ property tests


@settings(max_examples=examples(150), deadline=None)
@given(ITEMS)
def test_unmarshal_inverts_marshal(item: dict[str, Any]) -> None:
    assert identical(unmarshal(marshal(item)), item)


@settings(max_examples=examples(150), deadline=None)
@given(ITEMS)
def test_marshal_inverts_unmarshal_on_canonical_attribute_maps(item: dict[str, Any]) -> None:
    attribute_map = marshal(item)  # canonical: sorted sets, numbers as str() writes them
    assert marshal(unmarshal(attribute_map)) == attribute_map


def test_integral_decimal_with_exponent_zero_reads_back_as_the_equal_int() -> None:
    assert unmarshal(marshal({"n": Decimal("5")})) == {"n": 5}
    assert type(unmarshal(marshal({"n": Decimal("5")}))["n"]) is int


def _boto3_normal(value: Any) -> Any:
    if isinstance(value, Binary):
        return value.value
    if isinstance(value, dict):
        return {k: _boto3_normal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_boto3_normal(v) for v in value]
    if isinstance(value, set):
        return {_boto3_normal(v) for v in value}
    return value


def _with_bytes(attribute: Any) -> Any:
    """boto3 expects B as bytes (botocore decoded them), so hand it bytes."""
    if isinstance(attribute, dict) and len(attribute) == 1:
        ((tag, value),) = attribute.items()
        if tag == "B":
            return {"B": base64.b64decode(value)}
        if tag == "BS":
            return {"BS": [base64.b64decode(v) for v in value]}
        if tag == "L":
            return {"L": [_with_bytes(v) for v in value]}
        if tag == "M":
            return {"M": {k: _with_bytes(v) for k, v in value.items()}}
    return attribute


_BOTO3 = TypeDeserializer()


@settings(max_examples=examples(150), deadline=None)
@given(ITEMS)
def test_agrees_with_boto3_type_deserializer(item: dict[str, Any]) -> None:
    attribute_map = {k: _with_bytes(v) for k, v in marshal(item).items()}
    try:
        theirs = {k: _boto3_normal(_BOTO3.deserialize(v)) for k, v in attribute_map.items()}
    except DecimalException:
        assume(False)  # boto3 traps Inexact/Rounded on some valid numbers: compare the rest
    ours = unmarshal(attribute_map)
    assert ours == theirs  # numbers compare by value: int 5 == Decimal("5")

    def check_exact(a: Any, b: Any) -> None:  # and every Decimal keeps boto3's digits
        if isinstance(a, Decimal):
            assert a.as_tuple() == b.as_tuple()
        elif isinstance(a, dict):
            for key in a:
                check_exact(a[key], b[key])
        elif isinstance(a, list):
            for x, y in zip(a, b, strict=True):
                check_exact(x, y)

    check_exact(ours, theirs)


def test_decodes_valid_numbers_boto3_refuses() -> None:
    attribute = {"NS": ["1.000000000000000000000000000000000001E-130", "5"]}
    with pytest.raises(DecimalException):
        _BOTO3.deserialize(attribute)
    assert unmarshal_value(attribute) == {
        Decimal("1.000000000000000000000000000000000001E-130"),
        5,
    }


@settings(max_examples=examples(300), deadline=None)
@given(JSON)
def test_random_garbage_only_ever_raises_decode_error(garbage: Any) -> None:
    with contextlib.suppress(DecodeError):
        unmarshal(garbage)


@settings(max_examples=examples(300), deadline=None)
@given(ITEMS, st.data())
def test_mutated_attribute_maps_only_ever_raise_decode_error(
    item: dict[str, Any], data: st.DataObject
) -> None:
    attribute_map = marshal(item)
    spots: list[tuple[Any, Any]] = []

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                spots.append((node, key))
                collect(value)
        elif isinstance(node, list):
            for index, value in enumerate(node):
                spots.append((node, index))
                collect(value)

    collect(attribute_map)
    if spots:
        for _ in range(data.draw(st.integers(1, 3))):
            container, key = data.draw(st.sampled_from(spots))
            container[key] = data.draw(JSON)
    with contextlib.suppress(DecodeError):
        unmarshal(attribute_map)


# The fast paths (unmarshal's loop on a dict, _map's loop, _value's shortcuts) must give the
# general path's answer on every input: the same value of the same type, or the same error
# at the same path.


def _outcome(call: Any) -> tuple[Any, ...]:
    try:
        value = call()
    except DecodeError as exc:
        return ("error", exc.message, exc.path)
    return ("value", value)


class _Attributes(dict[str, Any]):
    """A dict that is not exactly a dict: takes none of the fast paths for dicts."""


def _general(attribute_map: dict[Any, Any]) -> tuple[Any, ...]:
    """unmarshal without the loops' shortcuts: the map and its AttributeValues wrapped."""
    wrapped = _Attributes(
        {
            name: _Attributes(item) if type(item) is dict else item
            for name, item in attribute_map.items()
        }
    )
    return _outcome(lambda: unmarshal(wrapped, path="image"))


@settings(max_examples=examples(500), deadline=None)
@given(ATTRIBUTE_MAPS)
def test_fast_paths_agree_with_the_general_path(attribute_map: dict[Any, Any]) -> None:
    fast = _outcome(lambda: unmarshal(attribute_map, path="image"))
    general = _general(attribute_map)
    assert fast[0] == general[0]
    if fast[0] == "error":
        assert fast == general
    else:
        assert identical(fast[1], general[1])


@settings(max_examples=examples(500), deadline=None)
@given(NUMBER_TEXTS)
def test_integer_fast_path_reads_numbers_as_the_number_parser_does(text: str) -> None:
    # Set elements take no shortcut: each goes through the general number parser.
    general = _outcome(lambda: unmarshal_value({"NS": [text]}))
    for shape, path in (
        ({"n": {"N": text}}, "image.n.N"),
        ({"n": {"L": [{"N": text}]}}, "image.n.L[0].N"),
        ({"n": {"M": {"m": {"N": text}}}}, "image.n.M.m.N"),
        (_Attributes(n={"N": text}), "image.n.N"),
    ):
        fast = _outcome(lambda shape=shape: unmarshal(shape, path="image"))
        if general[0] == "error":
            assert fast == ("error", general[1], path)
        else:
            value = fast[1]["n"]
            value = value[0] if isinstance(value, list) else value
            value = value["m"] if isinstance(value, dict) else value
            assert identical(value, next(iter(general[1])))


def test_integer_fast_path_edges() -> None:
    assert unmarshal({"a": {"N": "007"}, "b": {"N": "00"}}) == {"a": 7, "b": 0}
    assert unmarshal({"a": {"N": "9" * 38}})["a"] == 10**38 - 1
    for text in ("١٢", "²", " 1", "1_0", "1\n"):
        with pytest.raises(DecodeError, match="not a DynamoDB number literal"):
            unmarshal({"a": {"N": text}})
    with pytest.raises(DecodeError) as caught:
        unmarshal({1: {"S": "x"}}, path="dynamodb.Keys")  # type: ignore[dict-item]
    assert (caught.value.message, caught.value.path) == (
        "attribute name must be a string, got int",
        "dynamodb.Keys",
    )
