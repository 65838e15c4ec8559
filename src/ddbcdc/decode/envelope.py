"""The fields of a change record around its images: names, ids, timestamps, identity, pure.

Used by :mod:`ddbcdc.decode.record`; each check raises :class:`~ddbcdc.errors.DecodeError` naming
the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from math import isfinite
from typing import Any

from ddbcdc.errors import DecodeError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_US = timedelta(microseconds=1)
MAX_US = (datetime.max.replace(tzinfo=UTC) - EPOCH) // ONE_US
US_PER_UNIT = {"s": 1_000_000, "ms": 1_000, "us": 1}
# "auto": below 1e11 is seconds (until the year 5138), below 1e14 milliseconds, else
# microseconds. Milliseconds before 1973-03-03 would read as seconds: not a CDC concern.
SECONDS_BELOW = 100_000_000_000
MILLIS_BELOW = 100_000_000_000_000
EVENT_NAMES = frozenset(("INSERT", "MODIFY", "REMOVE"))
TTL_PRINCIPAL = "dynamodb.amazonaws.com"


def fail(message: str, path: str | None = None) -> DecodeError:
    """The error for a bad field (raise it; shard and sequence are added by the caller)."""
    return DecodeError(message, path=path)


def timestamp_us(value: Any, unit: str) -> int:
    """ApproximateCreationDateTime -> exact epoch microseconds."""
    path = "dynamodb.ApproximateCreationDateTime"
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise fail("timestamp is a naive datetime", path)
        micros = (value - EPOCH) // ONE_US
    elif type(value) is int or isinstance(value, float | Decimal):
        if isinstance(value, float | Decimal) and not isfinite(value):
            raise fail("timestamp is not finite", path)
        if value < 0:
            raise fail("timestamp is negative", path)
        if unit == "auto":
            unit = "s" if value < SECONDS_BELOW else "ms" if value < MILLIS_BELOW else "us"
        factor = US_PER_UNIT.get(unit)
        if factor is None:
            raise fail("timestamp unit must be auto, s, ms or us", path)
        if type(value) is int:
            micros = value * factor
        else:
            # float: its shortest repr is the JSON text it was parsed from, so round that
            # decimal string (not the binary float) to the microsecond, half to even.
            exact = value if isinstance(value, Decimal) else Decimal(repr(value))
            micros = int((exact * factor).to_integral_value(ROUND_HALF_EVEN))
    else:
        raise fail(f"timestamp must be a number, got {kind_of(value)}", path)
    if not 0 <= micros <= MAX_US:
        raise fail("timestamp is out of range", path)
    return micros


def kind_of(value: Any) -> str:
    """A value's type as error messages name it (``null`` for None)."""
    return "null" if value is None else type(value).__name__


def table_of(raw: Mapping[str, Any]) -> str | None:
    """tableName (Kinesis format), else the table in eventSourceARN, else None."""
    table = raw.get("tableName")
    if table is not None:
        raise fail(f"tableName must be a string, got {kind_of(table)}", "tableName")
    arn = raw.get("eventSourceARN")
    if arn is None:
        return None
    if type(arn) is not str:
        raise fail(f"eventSourceARN must be a string, got {kind_of(arn)}", "eventSourceARN")
    return table_from_arn(arn)


def table_from_arn(arn: str) -> str:
    """The table name in ``arn:aws:dynamodb:REGION:ACCOUNT:table/NAME[/stream/LABEL]``."""
    parts = arn.split(":", 5)
    resource = parts[5].split("/") if len(parts) == 6 else []
    if parts[0] != "arn" or len(resource) < 2 or resource[0] != "table" or not resource[1]:
        raise fail("eventSourceARN is not a DynamoDB table or stream ARN", "eventSourceARN")
    return resource[1]


def is_ttl_delete(event_name: str, identity: Any) -> bool:
    """A REMOVE whose userIdentity is the DynamoDB TTL service."""
    if identity is None:
        return False
    if not isinstance(identity, Mapping):
        raise fail("userIdentity must be an object or null", "userIdentity")
    # Lambda and the Kinesis format spell these in camelCase, GetRecords capitalises them.
    kind = identity.get("type", identity.get("Type"))
    principal = identity.get("principalId", identity.get("PrincipalId"))
    return event_name == "REMOVE" and kind == "Service" and principal == TTL_PRINCIPAL


def check_sequence(value: Any, path: str) -> str:
    """A sequence number: a string of ASCII digits."""
    if type(value) is not str or not value.isdigit() or not value.isascii():
        raise fail("sequence number must be a string of digits", path)
    return value


def check_envelope(raw: Mapping[str, Any]) -> tuple[str, str, Mapping[str, Any]]:
    """Check the fields every change record has; return event name, id and ``dynamodb``."""
    event_name = raw.get("eventName")
    if type(event_name) is not str or event_name not in EVENT_NAMES:
        raise fail("eventName must be INSERT, MODIFY or REMOVE", "eventName")
    event_id = raw.get("eventID")
    if type(event_id) is not str or not event_id:
        raise fail("eventID must be a non-empty string", "eventID")
    source = raw.get("eventSource")
    if source is not None and source != "aws:dynamodb":
        raise fail("eventSource must be aws:dynamodb", "eventSource")
    record_format = raw.get("recordFormat")
    if record_format is not None and record_format != "application/json":
        raise fail("recordFormat must be application/json", "recordFormat")
    dynamodb = raw.get("dynamodb")
    if type(dynamodb) is not dict and not isinstance(dynamodb, Mapping):
        raise fail("dynamodb must be an object", "dynamodb")
    return event_name, event_id, dynamodb
