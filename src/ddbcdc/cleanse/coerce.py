"""Value coercers: one attribute value (as :mod:`ddbcdc.decode.attributes` unmarshals it) -> one
column value, or ``ValueError`` with a message that names the problem, never the value.

Two families:

- **column coercers** (:func:`coercer`) for every column, lenient where no information is
  lost (an N into a text column becomes its exact decimal text; a string holding an integer
  fits an integer column);
- **key coercers** (:func:`key_coercer`) for key columns, exact: two distinct DynamoDB key
  values never become one PostgreSQL value, so distinct items never share a row. An integer
  key takes an N, or an S only in canonical form (``"7"``, not ``"07"``, ``" 7"``, ``"+7"``
  or ``"-0"``); a numeric key takes only N (``"7.0"`` and ``"7"`` are distinct S values but equal
  numerics); a text key takes S as it is and N in a canonical notation (numerically equal N
  values, which are one DynamoDB key, give one text); bytea takes B; a date key takes only
  ``YYYY-MM-DD``.

Text PostgreSQL cannot hold (U+0000, lone surrogates) is refused here, where the attribute
path is known, instead of failing a whole batch in the database.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Context, Decimal, InvalidOperation
from typing import Any

from ddbcdc.schema.mapping import ColumnMapping

__all__ = ["INT_BITS", "PY_TYPES", "RULES", "coercer", "key_coercer", "key_date"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NON_DIGITS = re.compile(r"[^0-9]+")
_CANONICAL_INT = re.compile(r"0|-?[1-9][0-9]*")  # not "-0": it is "0"'s row
_CANONICAL_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
#: An ISO-8601 time's fraction of a second past the microsecond (``fromisoformat`` drops it).
_FINER_THAN_MICROS = re.compile(r"[.,][0-9]{6}0*[1-9]")
#: Wide enough for any N (38 significant digits): normalizing in it never rounds.
_EXACT = Context(prec=40)
#: Value bits of the integer column types (one more bit is the sign).
INT_BITS = {"bigint": 63, "integer": 31, "smallint": 15}

#: The Python type each column type's values have after coercion.
PY_TYPES: dict[str, type] = {
    "bigint": int,
    "integer": int,
    "smallint": int,
    "numeric": Decimal,
    "text": str,
    "boolean": bool,
    "bytea": bytes,
    "jsonb": str,
    "timestamptz": datetime,
    "date": date,
}


def _fail(message: str) -> ValueError:
    return ValueError(message)


def _check_text(text: str, what: str) -> str:
    """``text`` if PostgreSQL can store it, else ValueError naming what is wrong."""
    if text.isascii():
        if "\x00" in text:
            raise _fail(f"contains U+0000, which PostgreSQL {what} cannot hold")
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _fail(f"contains a lone surrogate, which PostgreSQL {what} cannot hold") from None
    if "\x00" in text:
        raise _fail(f"contains U+0000, which PostgreSQL {what} cannot hold")
    return text


def _to_int(bits: int) -> Callable[[Any], Any]:
    low, high = -(2**bits), 2**bits - 1

    def coerce(value: Any) -> Any:
        if type(value) is int and low <= value <= high:  # the common case, checked first
            return value
        if isinstance(value, bool):
            raise _fail(f"expected a number, got {type(value).__name__}")
        if isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise _fail("not an integer") from None
        elif isinstance(value, Decimal):
            if not value.is_finite() or value != value.to_integral_value():
                raise _fail("not an integer")
            value = int(value)
        elif not isinstance(value, int):
            raise _fail(f"expected a number, got {type(value).__name__}")
        if not low <= value <= high:
            raise _fail(f"out of range for {bits + 1}-bit integer")
        return value

    return coerce


def _to_numeric(value: Any) -> Any:
    if isinstance(value, bool | float):
        raise _fail(f"expected a number, got {type(value).__name__}")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, str):
        try:
            value = Decimal(value.strip())
        except InvalidOperation:
            raise _fail("not a number") from None
    if not isinstance(value, Decimal) or not value.is_finite():
        raise _fail(f"expected a number, got {type(value).__name__}")
    return value


def _number_text(value: int | Decimal) -> str:
    if isinstance(value, int):
        return str(value)
    if value == value.to_integral_value() and value.is_finite():
        return str(int(value))
    return str(value)


#: The text rules, by name, in the order a mapping lists them.
RULES: dict[str, Callable[[str], str]] = {
    "trim": str.strip,
    "lowercase": str.lower,
    "uppercase": str.upper,
    "digits_only": lambda s: s if s.isascii() and s.isdigit() else _NON_DIGITS.sub("", s),
}


def _to_text(rules: tuple[str, ...]) -> Callable[[Any], Any]:
    steps = tuple(RULES[r] for r in rules)

    def coerce(value: Any) -> Any:
        if type(value) is str or isinstance(value, str):
            text = value
        elif type(value) is int:
            text = str(value)
        elif isinstance(value, int | Decimal) and not isinstance(value, bool):
            text = _number_text(value)
        else:
            raise _fail(f"expected a string, got {type(value).__name__}")
        for step in steps:
            text = step(text)
        if steps and not text:
            return None
        return _check_text(text, "text")

    return coerce


def _to_type(kind: type) -> Callable[[Any], Any]:
    def coerce(value: Any) -> Any:
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise _fail(f"expected {kind.__name__}, got {type(value).__name__}")
        return value

    return coerce


def _to_timestamp(value: Any) -> Any:
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise _fail("not an ISO-8601 timestamp") from None
        if _FINER_THAN_MICROS.search(value):
            raise _fail("timestamp finer than microseconds")
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if isinstance(value, int | Decimal) and not isinstance(value, bool):
        micros = _EXACT.multiply(Decimal(value), 1_000_000)  # exact: 38 digits at most
        if not micros.is_finite() or micros != micros.to_integral_value():
            raise _fail("epoch seconds finer than microseconds")
        try:
            return _EPOCH + timedelta(microseconds=int(micros))
        except OverflowError:
            raise _fail("timestamp out of range") from None
    raise _fail(f"expected a timestamp, got {type(value).__name__}")


def _to_date(value: Any) -> Any:
    if type(value) is date:
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            raise _fail("not an ISO-8601 date") from None
    raise _fail(f"expected a date, got {type(value).__name__}")


def _json_string(value: str) -> str:
    return json.dumps(_check_text(value, "jsonb"), ensure_ascii=False)


def json_text(value: Any) -> str:
    """Exact JSON text of an attribute value: Decimal as written, bytes as base64, sets as
    sorted lists."""
    if isinstance(value, str):
        return _json_string(value)
    if value is None or isinstance(value, bool | int):
        return json.dumps(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise _fail("non-finite number")
        return str(value)
    if isinstance(value, bytes):
        return json.dumps(base64.b64encode(value).decode("ascii"))
    if isinstance(value, Mapping):
        items = (f"{_json_string(str(k))}:{json_text(v)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, set | frozenset):
        return "[" + ",".join(json_text(v) for v in sorted(value)) + "]"
    if isinstance(value, list | tuple):
        return "[" + ",".join(json_text(v) for v in value) + "]"
    raise _fail(f"cannot store {type(value).__name__} as JSON")


def coercer(column: ColumnMapping) -> Callable[[Any], Any]:
    """The function turning a present, non-null attribute value into the column's value."""
    if column.type in INT_BITS:
        return _to_int(INT_BITS[column.type])
    if column.type == "text":
        return _to_text(column.rules)
    coercers: dict[str, Callable[[Any], Any]] = {
        "numeric": _to_numeric,
        "boolean": _to_type(bool),
        "bytea": _to_type(bytes),
        "jsonb": json_text,
        "timestamptz": _to_timestamp,
        "date": _to_date,
    }
    return coercers[column.type]


# -- keys: exact -------------------------------------------------------------------------


def _key_int(bits: int) -> Callable[[Any], Any]:
    lenient = _to_int(bits)

    def coerce(value: Any) -> Any:
        if type(value) is int:
            return lenient(value)
        if isinstance(value, str) and not _CANONICAL_INT.fullmatch(value):
            raise _fail(
                "a string key is not a canonical integer (no sign, space or leading zero): "
                "it would share a row with another key"
            )
        return lenient(value)

    return coerce


def _key_numeric(value: Any) -> Any:
    if isinstance(value, str):
        raise _fail("a string key cannot be a numeric key exactly: '7' and '7.0' would be one")
    return _to_numeric(value)


def _key_text(value: Any) -> Any:
    if isinstance(value, str):
        return _check_text(value, "text")
    if type(value) is int:
        return str(value)
    if isinstance(value, Decimal) and value.is_finite():
        # Numerically equal N values are one DynamoDB key: one canonical text for them.
        # (Normalized in a context of its own: the default one rounds to 28 digits.)
        return "0" if not value else format(value.normalize(_EXACT), "f")
    raise _fail(f"expected a string, got {type(value).__name__}")


def key_date(value: Any) -> Any:
    """A date key: only its one ISO form, ``2024-05-01`` (``2024-5-1`` and ``20240501`` would
    be the same date)."""
    if type(value) is date:
        return value
    if not isinstance(value, str) or not _CANONICAL_DATE.fullmatch(value):
        raise _fail("a date key must be written YYYY-MM-DD: another form would share a row")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise _fail("not a date") from None


def key_coercer(column: ColumnMapping) -> Callable[[Any], Any]:
    """The exact coercer of a key column (see the module doc)."""
    if column.type in INT_BITS:
        return _key_int(INT_BITS[column.type])
    if column.type == "numeric":
        return _key_numeric
    if column.type == "text":
        return _key_text
    if column.type == "bytea":
        return _to_type(bytes)
    if column.type == "date":
        return key_date
    raise ValueError(f"{column.type} cannot be a key type")  # refused by the mapping loader
