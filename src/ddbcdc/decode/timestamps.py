"""Points in time given by people: ISO-8601 or epoch numbers -> aware UTC datetimes, pure."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

__all__ = ["epoch_us", "parse_timestamp"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_NUMBER = re.compile(r"^\d+(\.\d+)?$")
# Epoch numbers by magnitude, as ApproximateCreationDateTime is read: below 1e11 seconds,
# below 1e14 milliseconds, else microseconds.
_SECONDS_BELOW = 100_000_000_000
_MILLIS_BELOW = 100_000_000_000_000


def parse_timestamp(value: str | int | datetime) -> datetime:
    """A point in time from ISO-8601 text or an epoch number.

    Args:
        value: ``2024-05-01T12:00:00Z`` (ISO-8601; without an offset it is UTC), or epoch
            seconds, milliseconds or microseconds told apart by magnitude (``1714564800``,
            ``1714564800.25``, ``1714564800000``), or an aware datetime.

    Returns:
        An aware datetime in UTC, exact to the microsecond.

    Raises:
        ValueError: the text is neither, or names a time before 1970 or after 9999 in UTC.
    """
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    elif isinstance(value, int) or _NUMBER.match(value.strip()):
        moment = _from_epoch(Decimal(value) if isinstance(value, int) else Decimal(value.strip()))
    else:
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(
                f"{value!r} is not a time: give ISO-8601 (2024-05-01T12:00:00Z) or epoch seconds"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:00:00-05:00: past the last datetime in UTC
        raise ValueError(f"{value!r} is out of range for a time") from None
    if moment < EPOCH:
        raise ValueError(f"{value!r} is before 1970-01-01")
    return moment


def _from_epoch(number: Decimal) -> datetime:
    unit = 1 if number < _SECONDS_BELOW else 1_000 if number < _MILLIS_BELOW else 1_000_000
    try:
        micros = int((number * 1_000_000 / unit).to_integral_value())
        return EPOCH + micros * _ONE_US
    except (OverflowError, InvalidOperation):
        raise ValueError(f"{number} is out of range for a time") from None


def epoch_us(moment: datetime) -> int:
    """An aware datetime as exact epoch microseconds."""
    return (moment - EPOCH) // _ONE_US
