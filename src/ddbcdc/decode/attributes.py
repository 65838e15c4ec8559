"""DynamoDB AttributeValue <-> Python values (``unmarshal`` / ``marshal``), pure.

Value rules (both directions):

==========  ==================================================================
``S``       ``str``
``N``       ``int`` for an integer literal (``"-12"``, ``"007"``), otherwise a
            :class:`~decimal.Decimal` built from the string exactly as written
            (``"123.4500"`` keeps its trailing zeros, ``"1.10E+5"`` its exponent).
            Never a float.
``B``       ``bytes`` (strict, canonical base64 in JSON; ``bytes`` accepted as is)
``BOOL``    ``bool``
``NULL``    ``None`` (the value must be ``true``)
``SS``      ``set[str]``; ``NS`` ``set[int | Decimal]``; ``BS`` ``set[bytes]``
``L``       ``list``
``M``       ``dict[str, ...]``
==========  ==================================================================

Numbers follow DynamoDB's rules (:mod:`ddbcdc.decode.numbers`): optional sign, digits with
an optional fraction and an optional exponent, at most 38 significant digits, a magnitude
from ``1E-130`` to ``9.9999999999999999999999999999999999999E+125`` (zero is allowed).

Sets must be non-empty and free of duplicates (DynamoDB rejects both), containers may
nest 32 levels deep. Anything else raises :class:`~ddbcdc.errors.DecodeError` naming the
attribute path (``phone.N``, ``tags.L[3].S``).

``marshal`` is the inverse: ``unmarshal(marshal(x)) == x`` for every representable value,
and ``marshal(unmarshal(a)) == a`` for every attribute map in canonical form (numbers as
``str(Decimal)`` writes them, sets compared as sets). ``float`` is refused: it is not exact.
"""

from __future__ import annotations

from binascii import Error as BinasciiError
from binascii import a2b_base64, b2a_base64
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from ddbcdc.decode.accelerator import SPEEDUPS
from ddbcdc.decode.numbers import MAX_DIGITS as _MAX_DIGITS
from ddbcdc.decode.numbers import ValueRuleError as _BadValueError
from ddbcdc.decode.numbers import kind_name as _kind
from ddbcdc.decode.numbers import number_text as _number_text
from ddbcdc.decode.numbers import parse_number as _number
from ddbcdc.errors import DecodeError

__all__ = ["ACCELERATED", "MAX_DEPTH", "marshal", "marshal_value", "unmarshal", "unmarshal_value"]

#: Deepest nesting of L/M containers DynamoDB stores.
MAX_DEPTH = 32


def _join(prefix: str, parts: list[str | int]) -> str:
    path = prefix
    for part in reversed(parts):
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else part
    return path


# ---------------------------------------------------------------------------- unmarshal


def _n(value: Any, depth: int) -> int | Decimal:
    return _number(value)


def _s(value: Any, depth: int) -> str:
    if type(value) is not str:
        raise _BadValueError(f"S must be a string, got {_kind(value)}")
    return value


def _binary(value: Any) -> bytes:
    if type(value) is str:
        try:
            data = a2b_base64(value, strict_mode=True)
        except (BinasciiError, ValueError) as exc:
            raise _BadValueError("not strict base64") from exc
        if b2a_base64(data, newline=False) != value.encode("ascii"):
            raise _BadValueError("not canonical base64")
        return data
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    raise _BadValueError(f"binary must be a base64 string, got {_kind(value)}")


def _b(value: Any, depth: int) -> bytes:
    return _binary(value)


def _bool(value: Any, depth: int) -> bool:
    if type(value) is not bool:
        raise _BadValueError(f"BOOL must be true or false, got {_kind(value)}")
    return value


def _null(value: Any, depth: int) -> None:
    if value is not True:
        raise _BadValueError("NULL must be true")
    return None


def _set(value: Any, element: Callable[[Any], Any]) -> set[Any]:
    if type(value) is not list and not isinstance(value, list | tuple):
        raise _BadValueError(f"set must be an array, got {_kind(value)}")
    if not value:
        raise _BadValueError("set is empty (DynamoDB sets are never empty)")
    out = set()
    for index, item in enumerate(value):
        try:
            out.add(element(item))
        except _BadValueError as exc:
            exc.parts.append(index)
            raise
    if len(out) != len(value):
        raise _BadValueError("set holds the same value twice")
    return out


def _ss(value: Any, depth: int) -> set[Any]:
    return _set(value, lambda item: _s(item, depth))


def _ns(value: Any, depth: int) -> set[Any]:
    return _set(value, _number)


def _bs(value: Any, depth: int) -> set[Any]:
    return _set(value, _binary)


def _l(value: Any, depth: int) -> list[Any]:
    if type(value) is not list and not isinstance(value, list | tuple):
        raise _BadValueError(f"L must be an array, got {_kind(value)}")
    if depth >= MAX_DEPTH:
        raise _BadValueError(f"nested deeper than {MAX_DEPTH} levels")
    depth += 1
    out = []
    index = 0
    try:
        for index, item in enumerate(value):  # noqa: B007 - index is read on error
            out.append(_value(item, depth))
    except _BadValueError as exc:
        exc.parts.append(index)
        raise
    return out


def _m(value: Any, depth: int) -> dict[str, Any]:
    if depth >= MAX_DEPTH:
        raise _BadValueError(f"nested deeper than {MAX_DEPTH} levels")
    return _map(value, depth + 1)


def _map(value: Any, depth: int) -> dict[str, Any]:
    if type(value) is not dict and not isinstance(value, Mapping):
        raise _BadValueError(f"attribute map must be an object, got {_kind(value)}")
    out: dict[str, Any] = {}
    for name, item in value.items():
        if type(name) is not str:
            raise _BadValueError(f"attribute name must be a string, got {_kind(name)}")
        # The hot loop: strings and short plain integers inline, the rest via _value.
        # Only up to 38 ASCII digits take the integer fast path: on those int() and _number
        # agree (leading zeros too); signs, fractions, exponents, non-ASCII digits and the
        # like go the general way.
        if type(item) is dict and len(item) == 1:
            text = item.get("S")
            if text is None:
                text = item.get("N")
                if (
                    type(text) is str
                    and text.isascii()
                    and text.isdigit()
                    and len(text) <= _MAX_DIGITS
                ):
                    out[name] = int(text)
                    continue
            elif type(text) is str:
                out[name] = text
                continue
        try:
            out[name] = _value(item, depth)
        except _BadValueError as exc:
            exc.parts.append(name)
            raise
    return out


_HANDLERS: dict[str, Callable[[Any, int], Any]] = {
    "S": _s,
    "N": _n,
    "B": _b,
    "BOOL": _bool,
    "NULL": _null,
    "SS": _ss,
    "NS": _ns,
    "BS": _bs,
    "L": _l,
    "M": _m,
}


def _value(attribute: Any, depth: int) -> Any:
    if type(attribute) is not dict and not isinstance(attribute, Mapping):
        raise _BadValueError(f"attribute value must be an object, got {_kind(attribute)}")
    if len(attribute) != 1:
        raise _BadValueError(f"attribute value must have exactly one type, got {len(attribute)}")
    ((tag, value),) = attribute.items()
    # Fast paths for the two commonest shapes: a string and a short plain integer.
    if tag == "S":
        if type(value) is str:
            return value
    elif (
        tag == "N"
        and type(value) is str
        and value.isascii()
        and value.isdigit()
        and len(value) <= _MAX_DIGITS
    ):
        return int(value)  # as in _map
    handler = _HANDLERS.get(tag) if type(tag) is str else None
    if handler is None:
        raise _BadValueError("unknown attribute type")
    try:
        return handler(value, depth)
    except _BadValueError as exc:
        exc.parts.append(tag)
        raise


def unmarshal(attribute_map: Mapping[str, Any], *, path: str = "") -> dict[str, Any]:
    """Turn a DynamoDB attribute map (``{"id": {"N": "1"}}``) into a plain dict.

    Args:
        attribute_map: attribute name -> AttributeValue, as in an item or a stream image.
        path: where the map sits in its record, prefixed to error paths.

    Returns:
        A new dict of Python values (see the module docstring for the rules).

    Raises:
        DecodeError: anything malformed, with the attribute path.
    """
    if type(attribute_map) is dict and _fast_unmarshal is not None:
        fast = _fast_unmarshal(attribute_map)
        if fast is not None:
            return fast
    try:
        return _map(attribute_map, 0)
    except _BadValueError as exc:
        raise DecodeError(exc.message, path=_join(path, exc.parts)) from exc.__cause__
    except RecursionError:
        raise DecodeError("attribute values nested too deeply", path=path or None) from None


# The C loop takes plain dicts and lists; it returns None for anything else, every error
# included, and unmarshal's Python path decides.
_fast_unmarshal: Callable[[dict[str, Any]], dict[str, Any] | None] | None = (
    None if SPEEDUPS is None else SPEEDUPS.unmarshal
)

#: True when the C speedups are in use: built at install time when a compiler exists, and
#: not switched off (``DDBCDC_SPEEDUPS=0``, :mod:`ddbcdc.decode.accelerator`).
ACCELERATED = _fast_unmarshal is not None


def unmarshal_value(value: Mapping[str, Any], *, path: str = "") -> Any:
    """Turn one AttributeValue (``{"N": "1.5"}``) into its Python value.

    Raises:
        DecodeError: anything malformed, with the attribute path.
    """
    try:
        return _value(value, 0)
    except _BadValueError as exc:
        raise DecodeError(exc.message, path=_join(path, exc.parts)) from exc.__cause__
    except RecursionError:
        raise DecodeError("attribute values nested too deeply", path=path or None) from None


# ------------------------------------------------------------------------------ marshal


def _marshal_set(value: set[Any] | frozenset[Any]) -> dict[str, Any]:
    if not value:
        raise _BadValueError("empty set (DynamoDB sets are never empty)")
    if all(type(item) is str for item in value):
        return {"SS": sorted(value)}
    if all(isinstance(item, bytes | bytearray) for item in value):
        return {"BS": [b2a_base64(item, newline=False).decode("ascii") for item in sorted(value)]}
    if all(isinstance(item, int | Decimal) and not isinstance(item, bool) for item in value):
        # Each checked before the sort: a NaN cannot be ordered (InvalidOperation).
        return {"NS": [text for _, text in sorted([(n, _number_text(n)) for n in value])]}
    raise _BadValueError("set must hold only str, only numbers (int/Decimal) or only bytes")


def _marshal(value: Any, depth: int) -> dict[str, Any]:
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, int | Decimal):
        return {"N": _number_text(value)}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"B": b2a_base64(value, newline=False).decode("ascii")}
    if isinstance(value, set | frozenset):
        return _marshal_set(value)
    if isinstance(value, float):
        raise _BadValueError("float is not exact: use int or Decimal")
    if depth >= MAX_DEPTH and isinstance(value, list | tuple | Mapping):
        raise _BadValueError(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, list | tuple):
        out = []
        for index, item in enumerate(value):
            try:
                out.append(_marshal(item, depth + 1))
            except _BadValueError as exc:
                exc.parts.append(index)
                raise
        return {"L": out}
    if isinstance(value, Mapping):
        return {"M": _marshal_map(value, depth + 1)}
    raise _BadValueError(f"cannot marshal a {_kind(value)}")


def _marshal_map(item: Any, depth: int) -> dict[str, Any]:
    if not isinstance(item, Mapping):
        raise _BadValueError(f"item must be a mapping, got {_kind(item)}")
    out = {}
    for name, value in item.items():
        if type(name) is not str:
            raise _BadValueError(f"attribute name must be a string, got {_kind(name)}")
        try:
            out[name] = _marshal(value, depth)
        except _BadValueError as exc:
            exc.parts.append(name)
            raise
    return out


def marshal(item: Mapping[str, Any]) -> dict[str, Any]:
    """Turn a dict of Python values into a DynamoDB attribute map; inverse of ``unmarshal``.

    Sets are written sorted, numbers as ``str(int)`` / ``str(Decimal)``, bytes as base64.

    Raises:
        DecodeError: a value DynamoDB cannot hold (float, NaN, empty or mixed set, number
            out of range, unsupported type), with the attribute path.
    """
    try:
        return _marshal_map(item, 0)
    except _BadValueError as exc:
        raise DecodeError(exc.message, path=_join("", exc.parts) or None) from None


def marshal_value(value: Any, *, path: str = "") -> dict[str, Any]:
    """Turn one Python value into its AttributeValue (``Decimal("1.5")`` -> ``{"N": "1.5"}``).

    Raises:
        DecodeError: a value DynamoDB cannot hold, with the attribute path.
    """
    try:
        return _marshal(value, 0)
    except _BadValueError as exc:
        raise DecodeError(exc.message, path=_join(path, exc.parts) or None) from None
