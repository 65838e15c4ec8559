"""Lossless JSON rendering of decoded values, for people and for other commands.

Decimal -> its exact string (``"123.4500"``), bytes -> base64, sets -> sorted lists,
datetimes -> ISO 8601, integers beyond 64 bits -> their decimal string (JSON parsers
commonly lose them), everything else as JSON has it.
"""

from __future__ import annotations

from binascii import b2a_base64
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import orjson
from pydantic import BaseModel

__all__ = ["record_to_json", "to_jsonable"]

_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


def _sorted(values: set[Any] | frozenset[Any]) -> list[Any]:
    try:
        return sorted(values)
    except TypeError:  # mixed element types: not a DynamoDB set, still render it
        return sorted(values, key=repr)


def to_jsonable(value: Any) -> Any:
    """A JSON-ready copy of ``value`` (see the module docstring for the rules)."""
    if value is None or isinstance(value, str | bool | float):
        return value
    if isinstance(value, int):
        return value if _INT_MIN <= value <= _INT_MAX else str(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return b2a_base64(value, newline=False).decode("ascii")
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, set | frozenset):
        return [to_jsonable(item) for item in _sorted(value)]
    if isinstance(value, Mapping):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(item) for item in value]
    if isinstance(value, BaseModel):
        return {name: to_jsonable(getattr(value, name)) for name in type(value).model_fields}
    raise TypeError(f"cannot render a {type(value).__name__} as JSON")


def record_to_json(record: BaseModel, *, pretty: bool = False) -> bytes:
    """One record (a ChangeRecord or any model) as JSON bytes, fields in model order.

    Raises:
        TypeError: a value JSON cannot hold (e.g. a str with a lone surrogate).
    """
    option = orjson.OPT_INDENT_2 if pretty else 0
    try:
        return orjson.dumps(to_jsonable(record), option=option)
    except orjson.JSONEncodeError as exc:
        raise TypeError(str(exc)) from exc
