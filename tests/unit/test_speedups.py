"""ddbcdc.decode._speedups against the pure-Python path, which decides every answer.

The C functions may decline any input (return None: Python then decodes it or raises), but
whatever they return must be exactly what Python returns: the same values of the same
types all the way down, in the same order. They must decline everything Python rejects,
must not decline the canonical shapes (the hot path), must not change or keep their input,
and must not leak.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from decimal import Decimal
from types import ModuleType
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attribute_strategies import (
    ATTRIBUTE_MAPS,
    ATTRIBUTE_VALUES,
    BASE64_EDGES,
    BASE64_TEXTS,
    ITEMS,
    JSON,
    NOT_BUILT,
    NUMBER_EDGES,
    NUMBER_TEXTS,
    ODD_ATTRIBUTES,
    VALUES,
    MapSub,
    containers,
    freeze,
    identical,
    nested,
    outcome,
    pure_python,
    speedup_hooks,
)
from ddbcdc import DecodeError, decode_record, marshal
from ddbcdc.decode import attributes
from ddbcdc.decode import record as decode
from ddbcdc.decode.attributes import MAX_DEPTH, marshal_value
from property_budget import examples
from speedup_support import (
    assert_identical,
    load,
    loaded,
    short_id,
    speedups_module,
)

# ------------------------------------------------------------------ built and wired


def test_the_c_extension_is_built_and_in_use(monkeypatch: pytest.MonkeyPatch) -> None:
    assert loaded is not None, NOT_BUILT
    assert attributes.ACCELERATED is True, NOT_BUILT
    assert decode._fast_build is not None, NOT_BUILT
    assert attributes._fast_unmarshal is loaded.unmarshal
    assert decode._fast_build is loaded.build
    # ... and decoding really goes through it, and takes what it returns.
    calls: list[tuple[str, Any]] = []

    def spy(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            result = function(*args)
            calls.append((name, result))
            return result

        return call

    for module, name in speedup_hooks():
        monkeypatch.setattr(module, name, spy(name, getattr(module, name)))
    record = decode_record(load("kinesis-modify-ms"))  # parsed: C builds it
    assert calls[0][0] == "_fast_build"
    assert record.keys is calls[0][1]["keys"]
    assert attributes.unmarshal({"a": {"N": "1.5"}}) is calls[-1][1]
    assert calls[-1] == ("_fast_unmarshal", {"a": Decimal("1.5")})
    calls.clear()
    decode_record(orjson.dumps(load("kinesis-modify-ms")))  # bytes: all in C, one way or another
    assert calls
    assert all(result is not None for _, result in calls)


# ------------------------------------------------------------------------ unmarshal


def canonical(attribute_map: Any, value: Any) -> bool:
    """Is ``attribute_map`` exactly what marshal writes for ``value``? Then C must take it."""
    return identical(marshal(value), attribute_map)


def check_unmarshal(attribute_map: Any, *, must_handle: bool = False) -> Any:
    """C's answer is None or Python's, exactly; and None only off the canonical path.

    Returns C's answer.
    """
    c_unmarshal = speedups_module().unmarshal
    before = freeze(attribute_map)
    with pure_python():
        expected = outcome(lambda: attributes.unmarshal(attribute_map, path="image"))
    assert freeze(attribute_map) == before
    fast = c_unmarshal(attribute_map)
    assert freeze(attribute_map) == before, "C unmarshal changed its input"
    if fast is None:
        if expected[0] == "value":
            assert not must_handle, f"C declined a valid map: {attribute_map!r}"
            assert not canonical(attribute_map, expected[1]), (
                f"C declined a canonical map: {attribute_map!r}"
            )
    else:
        assert expected[0] == "value", (
            f"C returned {fast!r} for {attribute_map!r}, where Python raises {expected[2]!r} "
            f"at {expected[3]!r}"
        )
        assert_identical(fast, expected[1])
        shared = {id(c) for c in containers(fast)} & {id(c) for c in containers(attribute_map)}
        assert not shared, "C returned a container of its input, not a new one"
    # And the public function, C switched on, answers as Python does.
    public = outcome(lambda: attributes.unmarshal(attribute_map, path="image"))
    assert public[0] == expected[0]
    if public[0] == "value":
        assert_identical(public[1], expected[1])
    else:
        assert public == expected
    return fast


@settings(max_examples=examples(100), deadline=None)
@given(ITEMS)
def test_canonical_maps_are_decoded_in_c_exactly_as_in_python(item: dict[str, Any]) -> None:
    attribute_map = marshal(item)
    assert check_unmarshal(attribute_map, must_handle=True) is not None
    assert_identical(speedups_module().unmarshal(attribute_map), item)


@settings(max_examples=examples(300), deadline=None)
@given(ATTRIBUTE_MAPS)
def test_odd_and_broken_maps_c_declines_or_decodes_exactly(attribute_map: dict[Any, Any]) -> None:
    check_unmarshal(attribute_map)


@settings(max_examples=examples(200), deadline=None)
@given(JSON)
def test_garbage_c_declines_or_decodes_exactly(garbage: Any) -> None:
    check_unmarshal(garbage)


_REPLACEMENTS = st.one_of(ATTRIBUTE_VALUES, JSON, NUMBER_TEXTS, BASE64_TEXTS)


@settings(max_examples=examples(200), deadline=None)
@given(ITEMS, st.data())
def test_mutated_maps_c_declines_or_decodes_exactly(
    item: dict[str, Any], data: st.DataObject
) -> None:
    attribute_map = marshal(item)
    spots: list[tuple[Any, Any]] = []

    def collect(node: Any) -> None:
        for key, value in node.items() if isinstance(node, dict) else enumerate(node):
            spots.append((node, key))
            if isinstance(value, dict | list):
                collect(value)

    collect(attribute_map)
    if spots:
        for _ in range(data.draw(st.integers(1, 3), label="edits")):
            container, key = data.draw(st.sampled_from(spots), label="spot")
            container[key] = data.draw(_REPLACEMENTS, label="replacement")
    if data.draw(st.booleans(), label="one more attribute at the end"):
        attribute_map[data.draw(st.text(max_size=3))] = data.draw(ATTRIBUTE_VALUES)
    check_unmarshal(attribute_map)


@settings(max_examples=examples(200), deadline=None)
@given(
    st.integers(MAX_DEPTH - 3, MAX_DEPTH + 2),
    st.text(alphabet="LM", min_size=1, max_size=4),
    st.one_of(VALUES.map(marshal_value), ATTRIBUTE_VALUES),
)
def test_nesting_around_the_limit_c_declines_or_decodes_exactly(
    levels: int, kinds: str, leaf: Any
) -> None:
    check_unmarshal(nested(levels, kinds, leaf))


@pytest.mark.parametrize("text", NUMBER_EDGES, ids=short_id)
def test_number_edges(text: str) -> None:
    for attribute_map in (
        {"n": {"N": text}},
        {"a": {"S": "x"}, "b": {"N": "1"}, "n": {"N": text}},
        {"n": {"L": [{"N": "1"}, {"N": text}]}},
        {"n": {"M": {"m": {"N": text}}}},
        {"n": {"NS": [text]}},
        {"n": {"NS": ["12", text]}},
    ):
        check_unmarshal(attribute_map)


@pytest.mark.parametrize(
    "text",
    [
        *("1", "-42", "0", "12345678901234567890123456789012345678", "1" + "0" * 125, "1.5"),
        *("-1.5", "123.4500", "1.10E+5", "1E-130", "-1E-130", "0.0", "1E+3", "2.50", "0.000001"),
        "9.9999999999999999999999999999999999999E+125",
        "-1.2345678901234567890123456789012345678",
    ],
)
def test_canonical_numbers_are_decoded_in_c(text: str) -> None:
    for attribute_map in ({"n": {"N": text}}, {"n": {"NS": [text]}}, {"n": {"L": [{"N": text}]}}):
        assert check_unmarshal(attribute_map, must_handle=True) is not None


@pytest.mark.parametrize("text", BASE64_EDGES, ids=short_id)
def test_binary_edges(text: str) -> None:
    for attribute_map in (
        {"b": {"B": text}},
        {"a": {"S": "x"}, "b": {"B": text}},
        {"b": {"BS": [text]}},
        {"b": {"BS": ["AA==", text]}},
        {"b": {"L": [{"B": text}]}},
    ):
        check_unmarshal(attribute_map)


@pytest.mark.parametrize(
    "data", [b"", b"\x00", b"\xff\xfe", b"abc", bytes(range(256))], ids=lambda d: f"{len(d)}B"
)
def test_canonical_binary_is_decoded_in_c(data: bytes) -> None:
    text = base64.b64encode(data).decode()
    for attribute_map in ({"b": {"B": text}}, {"b": {"BS": [text]}}, {"b": {"L": [{"B": text}]}}):
        assert check_unmarshal(attribute_map, must_handle=True) is not None


@pytest.mark.parametrize("odd", ODD_ATTRIBUTES, ids=short_id)
def test_odd_attribute_values(odd: Any) -> None:
    for attribute_map in (
        {"odd": odd},
        {"a": {"S": "x"}, "b": {"N": "1"}, "odd": odd},  # the last attribute
        {"a": {"S": "x"}, "b": {"N": "1"}, "odd": odd, "d": {"S": "y"}},  # the third
        {"l": {"L": [{"S": "x"}, odd]}},
        {"m": {"M": {"a": {"N": "1.5"}, "odd": odd}}},
    ):
        check_unmarshal(attribute_map)


@pytest.mark.parametrize("levels", [MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1])
@pytest.mark.parametrize("kinds", ["L", "M", "LM", "ML", "LLM"])
@pytest.mark.parametrize(
    "leaf",
    [{"S": "bottom"}, {"N": "1.5"}, {"NS": ["1", "2"]}, {"L": []}, {"M": {}}, {"N": "x"}],
    ids=short_id,
)
def test_nesting_edges(levels: int, kinds: str, leaf: Any) -> None:
    fast = check_unmarshal(nested(levels, kinds, leaf))
    container_leaf = "L" in leaf or "M" in leaf
    valid = levels + container_leaf <= MAX_DEPTH and leaf != {"N": "x"}
    assert (fast is not None) == valid


PARTIAL_MAPS = {
    "last attribute bad": {"a": {"S": "x"}, "b": {"N": "1"}, "c": {"B": "AA=="}, "z": {"N": "x"}},
    "third attribute unknown tag": {"a": {"S": "x"}, "b": {"N": "1"}, "c": {"X": "1"}},
    "bad deep in the last": {"a": {"S": "x"}, "z": {"M": {"l": {"L": [{"S": "y"}, {"B": 1}]}}}},
    "non-canonical base64 last": {"a": {"N": "1.5"}, "b": {"BS": ["AA=="]}, "z": {"B": "AB=="}},
    "duplicate numbers last": {"a": {"SS": ["x"]}, "z": {"NS": ["1", "1.0"]}},
    "empty set last": {"a": {"L": [{"S": "x"}]}, "z": {"SS": []}},
    "too deep last": {"a": {"S": "x"}, **nested(MAX_DEPTH + 1, "LM", {"S": "x"})},
}


@pytest.mark.parametrize("attribute_map", PARTIAL_MAPS.values(), ids=PARTIAL_MAPS.keys())
def test_maps_broken_part_way_through(attribute_map: dict[str, Any]) -> None:
    assert check_unmarshal(attribute_map) is None
    with pytest.raises(DecodeError):
        attributes.unmarshal(attribute_map)


def test_every_type_fixture_is_decoded_in_c() -> None:
    image = load("kinesis-every-type")["dynamodb"]["NewImage"]
    assert check_unmarshal(image, must_handle=True) is not None


def test_not_a_dict_is_declined(speedups: ModuleType) -> None:
    for value in ([], [{"a": {"S": "x"}}], "x", None, 1, MapSub(a={"S": "x"}), ({"S": "x"},)):
        assert speedups.unmarshal(value) is None
