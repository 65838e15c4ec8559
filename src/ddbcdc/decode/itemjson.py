"""DynamoDB attributes <-> JSON text for ``jsonb`` columns, lossless, pure.

The unmapped attributes of an item (and, when asked, the whole item) are kept in ``jsonb``
columns as plain JSON wherever plain JSON is unambiguous, with a one-member tag object
where it is not:

==========  ===================================================================
``S``       a JSON string (``"Ada"``); one holding U+0000, which ``jsonb`` cannot store,
            is ``{"S": ["a", "b"]}``: its parts between the U+0000 characters
``N``       a JSON number with every digit (``12``, ``-0.50``, ``1.10E+5``); ``jsonb``
            stores it as ``numeric``, exactly (it may print ``1.10E+5`` as ``110000``:
            the same DynamoDB number)
``BOOL``    ``true`` / ``false``
``NULL``    ``null`` (an absent attribute is an absent member)
``L``       a JSON array
``M``       a JSON object; one whose only member is named like a tag below is wrapped
            as ``{"M": {...}}``, so it cannot be read as a tagged value
``B``       ``{"B": "<base64>"}``
``SS``      ``{"SS": [...]}``, strings as for ``S``, sorted
``NS``      ``{"NS": [...]}``, numbers, sorted by value
``BS``      ``{"BS": ["<base64>", ...]}``, sorted
==========  ===================================================================

An object with exactly one member named ``S``, ``B``, ``SS``, ``NS``, ``BS`` or ``M`` is a
tagged value; any other object is a map. The column itself always holds the attribute map
as a plain object (attribute name -> value, never wrapped), so ``attributes->>'city'`` and
``(attributes->>'score')::numeric`` read as expected.

Text PostgreSQL cannot hold at all, a lone surrogate anywhere or U+0000 in an attribute
name, raises :class:`KeptValueError` with the attribute path: the record is dead-lettered,
its raw bytes kept.

:func:`decode_attributes` reads the text back (from this module or from PostgreSQL's
``jsonb::text``) into the Python values :func:`ddbcdc.decode.attributes.unmarshal` gives, and
:func:`ddbcdc.decode.attributes.marshal` of that is the DynamoDB item again.
"""

from __future__ import annotations

import json
import re
from binascii import Error as BinasciiError
from binascii import a2b_base64, b2a_base64
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import orjson

__all__ = ["TAGS", "KeptValueError", "comparable", "decode_attributes", "encode_attributes"]

#: Member names that make a one-member object a tagged value.
TAGS = frozenset({"S", "B", "SS", "NS", "BS", "M"})
# orjson's output holds an object whose first member is a tag name only as this sequence
# ('"' inside strings is always escaped, orjson writes no spaces): a match is a map that may
# need wrapping, and sends the item the exact slow way. The tagged values the fast path
# writes itself start with '{ "' instead, which this never matches.
_TAG_START = re.compile(rb'\{"(?:S|B|SS|NS|BS|M)":')
_NUL_ESCAPE = b"\\u0000"
_NUMBER_TYPES = frozenset({int, Decimal})


class KeptValueError(ValueError):
    """An attribute that no ``jsonb`` value can hold, with its path (``tags[2]``)."""

    def __init__(self, message: str, *parts: str | int) -> None:
        super().__init__(message)
        self.message = message
        self.parts: list[str | int] = list(parts)

    @property
    def path(self) -> str:
        """The attribute path, outermost first (``address.lines[1]``)."""
        path = ""
        for part in reversed(self.parts):
            if isinstance(part, int):
                path += f"[{part}]"
            else:
                path = f"{path}.{part}" if path else part
        return path


# ----------------------------------------------------------------------------- encode


def _fast_set(value: set[Any] | frozenset[Any]) -> bytes:
    # Sorting fails on a set mixing str, bytes and numbers; str sorts only with str and bytes
    # with bytes, so the first element's type is every element's type for those two.
    items = sorted(value)
    kind = type(items[0])
    if kind is str:
        return b'{ "SS":' + orjson.dumps(items) + b"}"
    if kind is bytes:
        return (
            b'{ "BS":['
            + b",".join(b'"' + b2a_base64(i, newline=False) + b'"' for i in items)
            + b"]}"
        )
    if {type(item) for item in items} <= _NUMBER_TYPES:
        return b'{ "NS":[' + ",".join(map(str, items)).encode() + b"]}"
    raise TypeError  # odd: the slow path says what is wrong


def _fragment(value: Any) -> Any:
    """orjson's hook for what it does not write itself: exact JSON text of the value."""
    kind = type(value)
    if kind is Decimal and value.is_finite():
        return orjson.Fragment(str(value))
    if kind is bytes:
        return orjson.Fragment(b'{ "B":"' + b2a_base64(value, newline=False) + b'"}')
    if (kind is set or kind is frozenset) and value:
        return orjson.Fragment(_fast_set(value))
    raise TypeError  # anything else (huge ints, subclasses) takes the exact slow path


def encode_attributes(attributes: Mapping[str, Any]) -> str:
    """The JSON text of an attribute map (values as :func:`ddbcdc.decode.attributes.unmarshal`
    gives them), in the encoding of the module doc.

    Raises:
        KeptValueError: a lone surrogate, or U+0000 in an attribute name (with the path).
    """
    if not attributes:
        return "{}"
    try:
        out = orjson.dumps(attributes, default=_fragment)
    except orjson.JSONEncodeError:
        return _map(attributes, top=True)
    if _NUL_ESCAPE in out or _TAG_START.search(out):
        return _map(attributes, top=True)
    return out.decode()


def _string(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise KeptValueError("contains a lone surrogate, which PostgreSQL cannot hold") from None
    return json.dumps(text, ensure_ascii=False)


def _text(text: str) -> str:
    if "\x00" in text:
        return '{"S":[' + ",".join(_string(part) for part in text.split("\x00")) + "]}"
    return _string(text)


def _number(value: int | Decimal) -> str:
    if isinstance(value, Decimal) and not value.is_finite():
        raise KeptValueError("number is not finite")
    return str(value)


def _b64(data: bytes) -> str:
    return '"' + b2a_base64(data, newline=False).decode("ascii") + '"'


def _set(value: set[Any] | frozenset[Any]) -> str:
    if value and all(type(item) is str for item in value):
        return '{"SS":[' + ",".join(_text(item) for item in sorted(value)) + "]}"
    if value and all(isinstance(item, bytes) for item in value):
        return '{"BS":[' + ",".join(_b64(item) for item in sorted(value)) + "]}"
    if value and all(isinstance(i, int | Decimal) and not isinstance(i, bool) for i in value):
        for item in value:
            _number(item)  # refuses a non-finite one before sorting
        return '{"NS":[' + ",".join(_number(item) for item in sorted(value)) + "]}"
    raise KeptValueError("set must hold only strings, only numbers or only bytes")


def _value(value: Any) -> str:
    if isinstance(value, str):
        return _text(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal):
        return _number(value)
    if isinstance(value, bytes | bytearray):
        return '{"B":' + _b64(bytes(value)) + "}"
    if isinstance(value, set | frozenset):
        return _set(value)
    if isinstance(value, list | tuple):
        items = []
        for index, item in enumerate(value):
            try:
                items.append(_value(item))
            except KeptValueError as exc:
                exc.parts.append(index)
                raise
        return "[" + ",".join(items) + "]"
    if isinstance(value, Mapping):
        return _map(value, top=False)
    raise KeptValueError(f"cannot keep a {type(value).__name__}")


def _map(value: Mapping[str, Any], *, top: bool) -> str:
    members = []
    for name, item in value.items():
        if "\x00" in name:
            raise KeptValueError(
                "attribute name contains U+0000, which PostgreSQL jsonb cannot hold", name
            )
        try:
            members.append(_string(name) + ":" + _value(item))
        except KeptValueError as exc:
            exc.parts.append(name)
            raise
    body = "{" + ",".join(members) + "}"
    if not top and len(value) == 1 and next(iter(value)) in TAGS:
        return '{"M":' + body + "}"
    return body


# ----------------------------------------------------------------------------- decode


def _bad(message: str) -> ValueError:
    return ValueError(f"not kept-attributes JSON: {message}")


def _binary(text: Any) -> bytes:
    if type(text) is not str:
        raise _bad("binary must be a base64 string")
    try:
        return a2b_base64(text, strict_mode=True)
    except (BinasciiError, ValueError) as exc:
        raise _bad("binary is not strict base64") from exc


def _decoded_string(value: Any) -> str:
    if type(value) is str:
        return value
    if type(value) is dict and len(value) == 1 and type(value.get("S")) is list:
        parts = value["S"]
        if all(type(part) is str for part in parts):
            return "\x00".join(parts)
    raise _bad("set element is not a string")


def _decoded_number(value: Any) -> int | Decimal:
    if type(value) is int or type(value) is Decimal:
        return value
    raise _bad("set element is not a number")


def _tagged(tag: str, inner: Any) -> Any:
    if tag == "B":
        return _binary(inner)
    if tag == "M":
        if type(inner) is not dict:
            raise _bad("M must hold an object")
        return {name: _decoded(item) for name, item in inner.items()}
    if type(inner) is not list:
        raise _bad(f"{tag} must hold an array")
    if tag == "S":
        return _decoded_string({"S": inner})
    if tag == "SS":
        return {_decoded_string(item) for item in inner}
    if tag == "NS":
        return {_decoded_number(item) for item in inner}
    return {_binary(item) for item in inner}


def _decoded(value: Any) -> Any:
    if type(value) is list:
        return [_decoded(item) for item in value]
    if type(value) is dict:
        if len(value) == 1:
            ((name, inner),) = value.items()
            if name in TAGS:
                return _tagged(name, inner)
        return {name: _decoded(item) for name, item in value.items()}
    return value


def decode_attributes(text: str | bytes) -> dict[str, Any]:
    """The attribute map kept as ``text`` (this encoding, or PostgreSQL's ``jsonb::text`` of
    it), as :func:`ddbcdc.decode.attributes.unmarshal` gives values: ``marshal`` of the result is
    the DynamoDB attribute map.

    Raises:
        ValueError: the text is not JSON of this encoding.
    """
    raw = json.loads(text, parse_float=Decimal)
    if type(raw) is not dict:
        raise _bad("the top level must be an object")
    return {name: _decoded(item) for name, item in raw.items()}


def comparable(value: Any) -> Any:
    """A hashable picture of a JSON or attribute value that is equal exactly when the values
    are: numbers by value (``1.10E+5`` is ``110000``), never a number equal to a boolean,
    maps and sets in any order."""
    if isinstance(value, str):
        return ("S", value)
    if isinstance(value, bool):
        return ("BOOL", value)
    if isinstance(value, int | Decimal):
        return ("N", value)
    if value is None:
        return ("NULL",)
    if isinstance(value, bytes):
        return ("B", value)
    if isinstance(value, Mapping):
        return ("M", frozenset((name, comparable(item)) for name, item in value.items()))
    if isinstance(value, set | frozenset):
        return ("set", frozenset(comparable(item) for item in value))
    if isinstance(value, list | tuple):
        return ("L", tuple(comparable(item) for item in value))
    raise TypeError(f"not a JSON or attribute value: {type(value).__name__}")
