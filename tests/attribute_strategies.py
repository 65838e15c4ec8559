"""Shared by the attribute, decode and speedups tests: hypothesis strategies for attribute
maps (valid, odd and broken), an exact comparator and a switch to the pure-Python path."""

from __future__ import annotations

import base64
import contextlib
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from decimal import Decimal
from types import BuiltinFunctionType, ModuleType
from typing import Any

from hypothesis import strategies as st

from ddbcdc import DecodeError
from ddbcdc.decode import attributes
from ddbcdc.decode import record as decode

NOT_BUILT = (
    "the C extension ddbcdc.decode._speedups was not built or does not import, or "
    "DDBCDC_SPEEDUPS=0 switched it off: installing ddbcdc needs a C compiler and the Python "
    "headers (e.g. gcc and python3-dev), then `pip install -e .` again"
)

# ------------------------------------------------------------------- exact comparison


def difference(a: Any, b: Any, path: str = "") -> str | None:
    """Where ``a`` and ``b`` differ in value or in any type all the way down, else None.

    Stricter than ``==``: ``1`` is not ``Decimal(1)`` nor ``True``, ``Decimal("1.10E+5")``
    is not ``Decimal("110000")``, a str subclass is not a str, dict keys must come in the
    same order (and be of the same types) and set elements are matched one by one.
    """
    where = path or "top"
    if type(a) is not type(b):
        return f"{where}: {type(a).__name__} {a!r} vs {type(b).__name__} {b!r}"
    if isinstance(a, dict):
        found = difference(list(a), list(b), f"{path}.keys()")
        if found:
            return found
        for key in a:
            found = difference(a[key], b[key], f"{path}[{key!r}]")
            if found:
                return found
        return None
    if isinstance(a, list | tuple):
        if len(a) != len(b):
            return f"{where}: length {len(a)} vs {len(b)}"
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            found = difference(x, y, f"{path}[{index}]")
            if found:
                return found
        return None
    if isinstance(a, set | frozenset):
        if len(a) != len(b):
            return f"{where}: {len(a)} elements vs {len(b)}"
        for x in a:
            twins = [y for y in b if y == x]
            if len(twins) != 1:
                return f"{where}: {x!r} has no counterpart in {b!r}"
            found = difference(x, twins[0], f"{path}{{{x!r}}}")
            if found:
                return found
        return None
    if isinstance(a, Decimal):
        same = a.as_tuple() == b.as_tuple()
    elif isinstance(a, float):
        same = repr(a) == repr(b)  # -0.0 is not 0.0, nan is nan
    elif isinstance(a, datetime):
        same = a.isoformat() == b.isoformat() and a.tzinfo is b.tzinfo and a.fold == b.fold
    else:
        same = bool(a == b)
    return None if same else f"{where}: {a!r} vs {b!r}"


def identical(a: Any, b: Any) -> bool:
    return difference(a, b) is None


def no_nul_names(value: Any) -> bool:
    """True when no map in ``value`` has a name holding U+0000 (jsonb cannot store one)."""
    if isinstance(value, dict):
        return all("\x00" not in k and no_nul_names(v) for k, v in value.items())
    if isinstance(value, list):
        return all(no_nul_names(v) for v in value)
    return True


def freeze(value: Any) -> Any:
    """A hashable, comparable picture of a value, its types and order included.

    Taken before and after a call, it shows whether the call changed its input.
    """
    kind = type(value)
    if isinstance(value, dict):
        return (kind, tuple((freeze(k), freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return (kind, tuple(freeze(item) for item in value))
    if isinstance(value, set | frozenset):
        return (kind, frozenset(freeze(item) for item in value))
    if isinstance(value, bytearray | memoryview):
        return (kind, bytes(value))
    if isinstance(value, float):
        return (kind, repr(value))
    if isinstance(value, Decimal):
        return (kind, value.as_tuple())
    return (kind, value)


def walk(value: Any) -> Iterator[Any]:
    """``value`` and everything in it: keys, items, elements."""
    yield value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from walk(key)
            yield from walk(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from walk(item)


def containers(value: Any) -> Iterator[Any]:
    """Every dict, list and set inside ``value``, ``value`` included."""
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from containers(item)
    elif isinstance(value, list | tuple):
        if isinstance(value, list):
            yield value
        for item in value:
            yield from containers(item)
    elif isinstance(value, set):
        yield value


# -------------------------------------------------------------------- the two paths


def speedup_hooks() -> list[tuple[ModuleType, str]]:
    """Where ddbcdc's modules hold C functions: (module, name) of each, to switch off.

    ``attributes._fast_unmarshal`` and ``decode._fast_build`` always (None without the
    extension), and any other function of ``ddbcdc.decode._speedups`` a module took.
    """
    hooks = [(attributes, "_fast_unmarshal"), (decode, "_fast_build")]
    for module_name, module in list(sys.modules.items()):
        if not module_name.startswith("ddbcdc.") or module_name == "ddbcdc.decode._speedups":
            continue
        for name, value in list(vars(module).items()):
            if (
                isinstance(value, BuiltinFunctionType)
                and value.__module__ == "ddbcdc.decode._speedups"
                and (module, name) not in hooks
            ):
                hooks.append((module, name))
    return hooks


@contextlib.contextmanager
def pure_python() -> Iterator[None]:
    """Decode with the C speedups switched off: the reference for every answer."""
    hooks = speedup_hooks()
    saved = [getattr(module, name) for module, name in hooks]
    for module, name in hooks:
        setattr(module, name, None)
    try:
        yield
    finally:
        for (module, name), value in zip(hooks, saved, strict=True):
            setattr(module, name, value)


def outcome(call: Callable[[], Any]) -> tuple[Any, ...]:
    """("value", result) or ("error", everything a DecodeError says); other errors raise."""
    try:
        value = call()
    except DecodeError as exc:
        return (
            "error",
            type(exc),
            exc.message,
            exc.path,
            exc.shard_id,
            exc.sequence_number,
            str(exc),
        )
    return ("value", value)


# ------------------------------------------------------------------------- odd types


class StrSub(str):
    """A str that is not exactly a str (no JSON parser builds one; a caller's mapping may)."""

    __slots__ = ()


class IntSub(int):
    """An int that is not exactly an int."""

    __slots__ = ()


class MapSub(dict[Any, Any]):
    """A dict that is not exactly a dict."""


# --------------------------------------------------------------- values to marshal

DIGITS = st.integers(min_value=1, max_value=10**38 - 1)
EXPONENTS = st.integers(min_value=-167, max_value=125)


@st.composite
def decimals(draw: st.DrawFn) -> Decimal:
    """Representable Decimals with a non-zero exponent (exponent 0 reads back as int)."""
    coefficient = draw(DIGITS)
    sign = draw(st.sampled_from([0, 1]))
    exponent = draw(EXPONENTS.filter(lambda e: e != 0))
    digits = tuple(map(int, str(coefficient)))
    # Built from a tuple: exact (scaleb would round to the context's 28 digits, and a
    # rounded 38-digit coefficient can land on exponent 0, which reads back as int).
    value = Decimal((sign, digits, exponent))
    if not -130 <= value.adjusted() <= 125:
        value = Decimal((sign, digits, -len(digits) - 1))
    return value


INTS = st.integers(min_value=-(10**38) + 1, max_value=10**38 - 1)
LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=12),
    INTS,
    decimals(),
    st.binary(max_size=12),
    st.sets(st.text(max_size=5), min_size=1, max_size=4),
    st.sets(st.one_of(INTS, decimals()), min_size=1, max_size=4).filter(
        lambda s: len({Decimal(x) for x in s}) == len(s)
    ),
    st.sets(st.binary(max_size=5), min_size=1, max_size=4),
)
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
#: Items of Python values: ``marshal`` turns them into canonical attribute maps.
ITEMS = st.dictionaries(st.text(max_size=8), VALUES, max_size=6)

TAGS = ["S", "N", "B", "SS", "NS", "BS", "L", "M", "BOOL", "NULL"]

#: JSON-like garbage, with attribute tags and plausible values sprinkled in.
JSON = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False),
        st.text(max_size=8),
        st.sampled_from([*TAGS, "1", "YQ=="]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(TAGS[:8]), st.text()),
            inner,
            max_size=4,
        ),
    ),
    max_leaves=20,
)

#: Small JSON-like values: what an attribute value holds when it holds the wrong thing.
SMALL_JSON = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False),
        st.text(max_size=4),
        st.sampled_from([*TAGS, "1", "YQ=="]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(TAGS[:8]), inner, max_size=2),
    ),
    max_leaves=4,
)

# ------------------------------------------------------------------- number strings

LARGEST = "9.9999999999999999999999999999999999999E+125"

#: Number strings at every edge of DynamoDB's grammar, range and digit count.
NUMBER_EDGES = [
    *("0", "-0", "+0", "00", "-000", "+5", "007", "-007", "0" * 40 + "1", "0" * 5000 + "1"),
    *("9" * 38, "-" + "9" * 38, "9" * 39, "1" + "0" * 37, "1" + "0" * 38, "1" + "0" * 40),
    *("1" + "0" * 125, "-1" + "0" * 125, "1" + "0" * 126),
    *("1" + "0" * 36 + "1", "1" + "0" * 37 + "1"),
    "12345678901234567890123456789012345678" + "0" * 88,
    "12345678901234567890123456789012345678" + "0" * 89,
    *("1.5", "-1.5", "+1.5", "0.0", "-0.0", "+0.0", "1.0", "1.", ".5", "-.5", "5.", "0.", ".0"),
    *("123.4500", "1.10E+5", "1e3", "1E3", "1e+3", "1E-3", "1e0", "1E+0", "1E-0", "-1e0"),
    *("1E+0000000", "1E-0000130", "1E+000125", "1.e3", ".5e1", "0E+5", "-0E-5", "0E0"),
    *("1E-130", "1E-131", "1E+125", "1E+126", LARGEST, "-" + LARGEST, "10E+125"),
    *("99.999999999999999999999999999999999999E+124", "0.1E-129", "0.01E-129", "0.1E+126"),
    *("0E-130", "0E-131", "0E+125", "0E+126", "0E-200", "0E-500", "0E+500", "0.000E+130"),
    *("1E-999999", "1E+999999", "1E+1000000", "0E-1000000", "1E+99999999999999999999"),
    "1.2345678901234567890123456789012345678",
    "1.23456789012345678901234567890123456789",
    "-1.2345678901234567890123456789012345678E-92",
    "0.00000000000000000000000000000000000000012345678901234567890123456789012345678",
    "1." + "0" * 60,
    "0." + "0" * 129 + "1",
    "0." + "0" * 130 + "1",
    "1" + "0" * 60 + ".0",
    *("", ".", "+", "-", "e", "E5", ".e3", "1e", "1E+", "1E-", "--1", "+-1", "-+1", "1-"),
    *("1..5", "1.5.", "1e5e5", "1e5.5", "1E++5", "0x1", "0b1", "1_000", "1_0E5", "1_000.5"),
    *(" 1", "1 ", "\t1", "1\n", "1.5\n", " 1.5", "1. 5", "\u3000" + "1", "1\x00"),
    *("NaN", "nan", "-NaN", "sNaN", "Infinity", "-Infinity", "inf", "Inf", "1e5j"),
    *("\u0661", "\u0661\u0662", "1\u0661", "\u0661.5", "\u00b2", "\uff11", "\u2460", "1\u00b2"),
    *("\u0967", "\u09e7.0", "1E\u0661", "\U0001d7cf"),
]

_SIGNS = st.sampled_from(["", "", "", "-", "+", "--", "+-"])
_DIGIT_RUNS = st.one_of(
    st.text(alphabet="0123456789", max_size=6),
    st.text(alphabet="0123456789", min_size=30, max_size=45),
    st.sampled_from(["", "0", "00", "007", "9" * 38, "9" * 39, "1" + "0" * 125, "1" + "0" * 126]),
)
_EXPONENT_DIGITS = st.one_of(
    st.integers(0, 200).map(str),
    st.sampled_from(["", "0", "000", "0000000", "0000130", "999999", "1000000", "500", "130"]),
)
_EXPONENT_PARTS = st.one_of(
    st.none(),
    st.tuples(st.sampled_from("eE"), st.sampled_from(["", "+", "-"]), _EXPONENT_DIGITS).map(
        "".join
    ),
)
_NOISE = st.one_of(
    st.just(""),
    st.just(""),
    st.sampled_from([" ", "\t", "\n", "_", "\u0661", "\u00b2", "\uff11", ".", "e", "x", "\x00"]),
)


@st.composite
def number_grammar(draw: st.DrawFn) -> str:
    """sign, digits, fraction, exponent, each with its odd cases, and a stray character."""
    text = draw(_SIGNS) + draw(_DIGIT_RUNS)
    fraction = draw(st.one_of(st.none(), _DIGIT_RUNS))
    if fraction is not None:
        text += "." + fraction
    exponent = draw(_EXPONENT_PARTS)
    if exponent is not None:
        text += exponent
    noise = draw(_NOISE)
    if noise:
        at = draw(st.integers(0, len(text)))
        text = text[:at] + noise + text[at:]
    return text


NUMBER_TEXTS = st.one_of(
    number_grammar(),
    st.sampled_from(NUMBER_EDGES),
    st.text(alphabet="0123456789", max_size=45),
    st.text(alphabet="0123456789+-._eE \t", max_size=12),
    st.text(alphabet=st.characters(categories=["Nd", "No", "Zs"]), max_size=5),
)

# ------------------------------------------------------------------- base64 strings

_B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

#: Base64 strings at the edges of strict, canonical decoding.
BASE64_EDGES = [
    *("", "AA==", "AB==", "AP==", "AAA=", "AAB=", "AAE=", "AAAA", "/w==", "/x==", "+/+/"),
    *("YQ", "YQ=", "YQ==", "YQ===", "Y=Q=", "=YQ=", "YQ==YQ==", "YQ==AA==", "====", "=", "A"),
    *("AAAAA", "AAAAAA==", "YWJj", "YWJjZA==", "YWJjZA", "YWJjZA=", "-_-_", "-w==", "_w=="),
    *("YQ==\n", " YQ==", "Y Q==", "YQ== ", "\tYQ==", "YQ\n==", "YWJj\nZA==", "YQ==\x00"),
    *("\u00ff\u00ff\u00ff\u00ff", "\u0661\u0661\u0661\u0661", "YQ=\u3000", "!!!!", "YQ.="),
]


@st.composite
def noncanonical_base64(draw: st.DrawFn) -> str:
    """Strict base64 of some bytes with unused bits set: decodes, but is not canonical."""
    data = draw(st.binary(min_size=1, max_size=10).filter(lambda b: len(b) % 3))
    text = base64.b64encode(data).decode()
    last = len(text) - 1 - text.count("=")
    unused = 15 if len(data) % 3 == 1 else 3  # 4 or 2 unused bits in the last character
    char = _B64_ALPHABET[_B64_ALPHABET.index(text[last]) | draw(st.integers(1, unused))]
    return text[:last] + char + text[last + 1 :]


BASE64_TEXTS = st.one_of(
    st.binary(max_size=12).map(lambda b: base64.b64encode(b).decode()),
    st.sampled_from(BASE64_EDGES),
    noncanonical_base64(),
    st.text(alphabet=_B64_ALPHABET + "=-_ \n", max_size=12),
)

# ------------------------------------------------------------ odd attribute values

#: Attribute values of the wrong shape or type, and shapes no JSON parser builds.
ODD_ATTRIBUTES: list[Any] = [
    *({"NULL": False}, {"NULL": None}, {"NULL": 1}, {"NULL": "true"}, {"NULL": [True]}),
    *({"BOOL": 1}, {"BOOL": 0}, {"BOOL": None}, {"BOOL": "true"}, {"BOOL": [True]}),
    *({"S": 1}, {"S": None}, {"S": b"x"}, {"S": ["x"]}, {"S": True}, {"S": 1.5}),
    *({"N": 1}, {"N": 1.5}, {"N": True}, {"N": None}, {"N": ["1"]}, {"N": b"1"}),
    *({"B": 1}, {"B": None}, {"B": ["AA=="]}, {"B": True}),
    *({"SS": []}, {"NS": []}, {"BS": []}, {"SS": "a"}, {"NS": "1"}, {"BS": "AA=="}),
    *({"SS": ["a", "a"]}, {"SS": ["a", 1]}, {"SS": [None]}, {"SS": None}, {"SS": {}}),
    *({"NS": ["1", "1.0"]}, {"NS": ["1", "01"]}, {"NS": ["0", "-0"]}, {"NS": ["0.0", "-0.0"]}),
    *({"NS": ["1E+3", "1000"]}, {"NS": [1]}, {"NS": ["1", "x"]}, {"NS": ["1", "2", "1"]}),
    *({"BS": ["AA==", "AA=="]}, {"BS": ["AA==", b"\x00"]}, {"BS": [1]}, {"BS": ["AB=="]}),
    *({"L": "x"}, {"L": {}}, {"L": None}, {"L": [{}]}, {"L": [{"S": "x"}, "bare"]}),
    *({"L": [{"S": "x"}, {"N": "1.2.3"}]}, {"M": []}, {"M": "x"}, {"M": None}),
    *({"M": {"a": "bare"}}, {"M": {1: {"S": "x"}}}, {"M": {"a": {"X": "1"}}}),
    *({}, {"S": "x", "N": "1"}, {"N": "1", "S": "x"}, {"S": "x", "s": "x"}),
    *({"s": "x"}, {"n": "1"}, {"SSS": ["a"]}, {"": "x"}, {"X": "1"}, {"BOOLEAN": True}),
    *({"Bool": True}, {"B ": "AA=="}, {" S": "x"}, {"NUL": True}, {"NULLS": True}),
    *({"\u0053\u0301": "x"}, {1: "x"}, {None: "x"}, {("S",): "x"}),
    *("bare", None, 1, 1.5, True, [], [{"S": "x"}], ["S", "x"]),
    # Shapes only a caller's mapping can have (GetRecords via boto3, or stranger):
    *({"B": b"\x00raw"}, {"B": bytearray(b"\x00")}, {"B": memoryview(b"\x00")}, {"B": b""}),
    *({"BS": [b"a", b"b"]}, {"BS": (b"a",)}, {"BS": [b"a", "YQ=="]}, {"BS": [bytearray(b"a")]}),
    *({"L": ({"S": "x"},)}, {"NS": ("1", "2")}, {"SS": ("a",)}, {"SS": ["a", StrSub("b")]}),
    *({StrSub("S"): "x"}, {"S": StrSub("x")}, {"N": StrSub("1")}, {"N": StrSub("1.5")}),
    *({"NS": [StrSub("1")]}, {"B": StrSub("AA==")}, {"BOOL": IntSub(1)}, {"N": IntSub(1)}),
    *(MapSub({"S": "x"}), {"M": MapSub({"a": {"S": "x"}})}, {"L": [MapSub({"N": "1"})]}),
    *({"M": {StrSub("a"): {"S": "x"}}}, {"S": "\ud800"}, {"SS": ["\ud800"]}),
]


def _plain(value: Any) -> Any:
    """A fresh copy (mutable containers are not shared between examples)."""
    if type(value) is dict:
        return {k: _plain(v) for k, v in value.items()}
    if type(value) is list:
        return [_plain(v) for v in value]
    return value


#: Attribute values of every kind: valid, odd and broken.
ATTRIBUTE_VALUES = st.one_of(
    st.builds(lambda text: {"N": text}, NUMBER_TEXTS),
    st.builds(lambda text: {"B": text}, BASE64_TEXTS),
    st.builds(lambda texts: {"NS": texts}, st.lists(NUMBER_TEXTS, max_size=3)),
    st.builds(lambda texts: {"BS": texts}, st.lists(BASE64_TEXTS, max_size=3)),
    st.builds(lambda texts: {"SS": texts}, st.lists(st.sampled_from(["a", "b", ""]), max_size=3)),
    st.builds(lambda text: {"S": text}, st.text(max_size=6)),
    st.sampled_from(ODD_ATTRIBUTES).map(_plain),
    st.builds(lambda tag, value: {tag: value}, st.sampled_from(TAGS), SMALL_JSON),
    st.builds(
        lambda text, tag, value: {"S": text, tag: value},
        st.text(max_size=3),
        st.one_of(st.sampled_from(TAGS), st.text(max_size=3)),
        SMALL_JSON,
    ),
    st.builds(lambda text: {"L": [{"N": text}, {"S": text}]}, NUMBER_TEXTS),
    st.builds(lambda text: {"M": {"n": {"N": text}}}, NUMBER_TEXTS),
    JSON,
)

#: Attribute maps mixing all of the above, with a non-string name now and then.
ATTRIBUTE_MAPS = st.dictionaries(
    st.one_of(st.text(max_size=4), st.integers(0, 3)), ATTRIBUTE_VALUES, max_size=5
)


def nested(levels: int, kinds: str, leaf: Any) -> dict[str, Any]:
    """``{"top": ...}`` with ``levels`` containers around ``leaf``, innermost first.

    ``kinds`` is cycled to choose each level: "L" a one-element list, "M" a one-entry map.
    """
    value = leaf
    for level in range(levels):
        value = {"L": [value]} if kinds[level % len(kinds)] == "L" else {"M": {"x": value}}
    return {"top": value}
