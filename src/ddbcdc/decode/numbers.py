"""DynamoDB numbers, exactly: N text -> int or Decimal and back, within DynamoDB's limits. Pure.

At most 38 significant digits (leading and trailing zeros do not count, as DynamoDB trims
them) and a magnitude from ``1E-130`` to ``9.9999999999999999999999999999999999999E+125``
(zero is allowed); an optional sign, leading zeros and an exponent are accepted, as DynamoDB
accepts them on writes. :func:`parse_number` gives ``int`` for an integer literal and a
:class:`~decimal.Decimal` exactly as written otherwise, never a float; :func:`number_text`
is its inverse. Both raise :class:`ValueRuleError`, which :mod:`ddbcdc.decode.attributes`
turns into a :class:`~ddbcdc.errors.DecodeError` with the attribute path.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

__all__ = ["MAX_DIGITS", "ValueRuleError", "kind_name", "number_text", "parse_number"]

#: Significant digits a DynamoDB number may have.
MAX_DIGITS = 38
_MIN_ADJUSTED = -130
_MAX_ADJUSTED = 125
_NUMBER = re.compile(r"([+-]?)([0-9]*)(?:\.([0-9]*))?(?:[eE]([+-]?[0-9]+))?", re.ASCII)


class ValueRuleError(Exception):
    """A value outside DynamoDB's rules: a message, and the path parts collected while
    unwinding (innermost first)."""

    def __init__(self, message: str, *parts: str | int) -> None:
        super().__init__(message)
        self.message = message
        self.parts: list[str | int] = list(parts)


def kind_name(value: Any) -> str:
    """The type of ``value`` for a message (``null`` for None)."""
    return "null" if value is None else type(value).__name__


def parse_number(text: Any) -> int | Decimal:
    """A DynamoDB number string, exactly (the general path; the C speedups have a fast one)."""
    if type(text) is not str:
        raise ValueRuleError(f"number must be a string, got {kind_name(text)}")
    match = _NUMBER.fullmatch(text)
    if match is None:
        raise ValueRuleError("not a DynamoDB number literal")
    sign, whole, fraction, exponent = match.groups()
    if not whole and not fraction:
        raise ValueRuleError("not a DynamoDB number literal")
    if len((whole + (fraction or "")).strip("0")) > MAX_DIGITS:
        raise ValueRuleError("number has more than 38 significant digits")
    if fraction is None and exponent is None:
        whole = whole.lstrip("0")
        if len(whole) > _MAX_ADJUSTED + 1:
            raise ValueRuleError("number is out of DynamoDB's range")
        return int(sign + whole) if whole else 0
    if exponent is not None and len(exponent.lstrip("+-").lstrip("0")) > 6:
        raise ValueRuleError("number is out of DynamoDB's range")
    value = Decimal(text)
    if not _MIN_ADJUSTED <= value.adjusted() <= _MAX_ADJUSTED:
        raise ValueRuleError("number is out of DynamoDB's range")
    return value


def number_text(value: int | Decimal) -> str:
    """The N text of ``value``."""
    if isinstance(value, int):
        if value.bit_length() > 420:  # > 10**126: also keeps str() far from its digit cap
            raise ValueRuleError("integer is out of DynamoDB's range")
        text = str(value)
        digits = text.lstrip("-")
        if len(digits.rstrip("0")) > MAX_DIGITS or len(digits) > _MAX_ADJUSTED + 1:
            raise ValueRuleError("integer does not fit DynamoDB's 38 digits or range")
        return text
    if not value.is_finite():
        raise ValueRuleError("number is not finite")
    digits = "".join(map(str, value.as_tuple().digits)).strip("0")
    if len(digits) > MAX_DIGITS:
        raise ValueRuleError("number has more than 38 significant digits")
    if not _MIN_ADJUSTED <= value.adjusted() <= _MAX_ADJUSTED:
        raise ValueRuleError("number is out of DynamoDB's range")
    return str(value)
