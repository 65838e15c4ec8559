"""The kept-attributes encoding: lossless both ways, plain JSON where it can be."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given

from attribute_strategies import ITEMS, difference, no_nul_names
from ddbcdc.decode.attributes import marshal
from ddbcdc.decode.itemjson import KeptValueError, decode_attributes, encode_attributes
from ddbcdc.decode.itemjson import _map as exact_encoding


@given(ITEMS.filter(no_nul_names))
def test_every_item_comes_back_exactly(item: dict[str, Any]) -> None:
    text = encode_attributes(item)
    back = decode_attributes(text)
    assert difference(item, back) is None, text
    assert marshal(back) == marshal(item)


@given(ITEMS.filter(no_nul_names))
def test_the_fast_path_writes_what_the_exact_encoding_means(item: dict[str, Any]) -> None:
    """orjson's text and the pure-Python text decode to the same values."""
    fast, exact = encode_attributes(item), exact_encoding(item, top=True)
    assert difference(decode_attributes(fast), decode_attributes(exact)) is None


@pytest.mark.parametrize(
    ("item", "text"),
    [
        ({}, "{}"),
        ({"name": "Ada", "n": 12, "ok": True, "none": None}, None),
        ({"price": Decimal("-0.50"), "sci": Decimal("1.10E+5")}, '{"price":-0.50,"sci":1.10E+5}'),
        ({"photo": b"\x00\xff"}, '{"photo":{"B":"AP8="}}'),
        ({"tags": {"b", "a"}}, '{"tags":{"SS":["a","b"]}}'),
        ({"n": {3, Decimal("1.5")}}, '{"n":{"NS":[1.5,3]}}'),
        ({"bs": {b"b", b"a"}}, '{"bs":{"BS":["YQ==","Yg=="]}}'),
        ({"list": ["a", ["b"]], "map": {"x": {"y": 1}}}, None),
        ({"m": {"B": "not binary"}}, '{"m":{"M":{"B":"not binary"}}}'),
        ({"m": {"SS": ["a list"]}}, '{"m":{"M":{"SS":["a list"]}}}'),
        ({"m": {"B": 1, "other": 2}}, '{"m":{"B":1,"other":2}}'),
        ({"B": "a top-level attribute named B"}, '{"B":"a top-level attribute named B"}'),
        ({"z": "a\x00b", "zs": {"\x00"}}, '{"z":{"S":["a","b"]},"zs":{"SS":[{"S":["",""]}]}}'),
        ({"big": 10**37, "tiny": Decimal("1E-130")}, f'{{"big":{10**37},"tiny":1E-130}}'),
    ],
)
def test_encoding_examples(item: dict[str, Any], text: str | None) -> None:
    encoded = encode_attributes(item)
    if text is not None:
        assert json.loads(encoded) == json.loads(text)
    else:
        assert json.loads(encoded) == item  # plain JSON all the way
    assert difference(decode_attributes(encoded), item) is None


def test_text_postgresql_normalized_reads_back_as_the_same_numbers() -> None:
    """jsonb prints numbers in plain notation: the same DynamoDB numbers."""
    back = decode_attributes('{"sci": 110000, "tiny": 0.00010, "neg": -0}')
    assert back == {"sci": Decimal("1.10E+5"), "tiny": Decimal("1.0E-4"), "neg": 0}


@pytest.mark.parametrize(
    ("item", "path", "message"),
    [
        ({"a\x00b": 1}, "a\x00b", "attribute name contains U+0000"),
        ({"m": {"ok": {"x\x00": 1}}}, "m.ok.x\x00", "attribute name contains U+0000"),
        ({"l": ["fine", "\ud800"]}, "l[1]", "lone surrogate"),
        ({"s": {"\udfff"}}, "s", "lone surrogate"),
        ({"n": {Decimal("NaN"), 1}}, "n", "not finite"),
        ({"mixed": {"a", 1}}, "mixed", "set must hold only"),
    ],
)
def test_what_jsonb_cannot_hold_is_refused_with_its_path(
    item: dict[str, Any], path: str, message: str
) -> None:
    with pytest.raises(KeptValueError, match=re.escape(message)) as caught:
        encode_attributes(item)
    assert caught.value.path == path


@pytest.mark.parametrize(
    "text", ["[]", '"x"', '{"a": {"B": "not base64!"}}', '{"a": {"NS": ["1"]}}', '{"a": {"M": 1}}']
)
def test_decoding_refuses_what_is_not_this_encoding(text: str) -> None:
    with pytest.raises(ValueError, match="not kept-attributes JSON"):
        decode_attributes(text)
