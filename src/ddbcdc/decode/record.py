"""Change records -> :class:`ChangeRecord`, pure.

Accepts the Kinesis Data Streams for DynamoDB record format, the DynamoDB Streams record
format (GetRecords, Lambda DynamoDB events, and the JSON the DynamoDB Streams Kinesis Adapter
hands a KCL record processor: epoch-millisecond ApproximateCreationDateTime, ``{}`` for an
image the change does not have) and Lambda Kinesis events.
"""

from __future__ import annotations

from binascii import Error as BinasciiError
from binascii import a2b_base64
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, field_serializer

from ddbcdc.decode.accelerator import SPEEDUPS
from ddbcdc.decode.attributes import ACCELERATED, unmarshal
from ddbcdc.decode.envelope import (
    EPOCH,
    MILLIS_BELOW,
    ONE_US,
    SECONDS_BELOW,
    US_PER_UNIT,
    check_envelope,
    check_sequence,
    fail,
    is_ttl_delete,
    kind_of,
    table_of,
    timestamp_us,
)
from ddbcdc.decode.render import to_jsonable
from ddbcdc.errors import DecodeError

__all__ = ["ChangeRecord", "EventName", "TimestampUnit", "decode_lambda_event", "decode_record"]

EventName = Literal["INSERT", "MODIFY", "REMOVE"]
TimestampUnit = Literal["auto", "s", "ms", "us"]


class ChangeRecord(BaseModel):
    """One decoded item change.

    ``approximate_creation_us`` is the exact version used downstream: epoch microseconds.
    ``shard_id`` and ``sequence_number`` are the source position when known.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    event_id: str
    event_name: EventName
    table_name: str | None
    aws_region: str | None
    keys: dict[str, Any]
    new_image: dict[str, Any] | None
    old_image: dict[str, Any] | None
    approximate_creation: datetime
    approximate_creation_us: int
    size_bytes: int | None
    is_ttl_delete: bool
    shard_id: str | None = None
    sequence_number: str | None = None

    @field_serializer("keys", "new_image", "old_image", when_used="json")
    def _lossless(self, image: dict[str, Any] | None) -> Any:
        """``model_dump_json`` renders values as ``ddbcdc decode`` does: bytes as base64
        (any bytes, not only UTF-8), Decimals exactly, sets sorted."""
        return to_jsonable(image)


_FIELDS_SET = set(ChangeRecord.model_fields)


def _construct(values: dict[str, Any]) -> ChangeRecord:
    """What ``ChangeRecord.model_construct`` does, without its per-field loop.

    Every value has been validated by this module before it gets here. Safe because the
    model has no aliases, defaults that matter here, extras, private attributes or
    post-init hook (asserted below and by the tests against ``model_validate``). The slots
    are filled through their descriptors, which skips ``object.__setattr__``'s lookup.

    All records share one fields-set: every field is set, and pydantic never changes the
    set of a frozen model in place (``model_copy`` copies it before an update).
    """
    record = _new(ChangeRecord)
    _set_dict(record, values)
    _set_fields_set(record, _FIELDS_SET)
    _set_extra(record, None)
    _set_private(record, None)
    return record


_SLOTS = ("__dict__", "__pydantic_fields_set__", "__pydantic_extra__", "__pydantic_private__")
_new = object.__new__
_set_dict, _set_fields_set, _set_extra, _set_private = (
    BaseModel.__dict__[name].__set__ for name in _SLOTS
)
_PLAIN_MODEL = not (
    ChangeRecord.__pydantic_post_init__
    or ChangeRecord.__private_attributes__
    or any(f.alias or f.validation_alias for f in ChangeRecord.model_fields.values())
)
if not _PLAIN_MODEL:  # pragma: no cover - guards a future edit of the model
    _construct = ChangeRecord.model_construct  # type: ignore[assignment]


def _parse(data: bytes | str) -> Any:
    """Raw JSON or base64 of JSON -> parsed value; JSON starts with '{' after whitespace."""
    first = data[:1]
    if first != b"{" and first != "{":
        if first.isspace():
            data = data.strip()
        if data[:1] != b"{" and data[:1] != "{":
            try:
                data = a2b_base64(data, strict_mode=True)
            except (BinasciiError, ValueError) as exc:
                # Strict base64 has no whitespace: retry once without a trailing one.
                if not data[-1:].isspace():
                    raise fail(_NOT_JSON_OR_BASE64) from exc
                data = _base64(data.strip())
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise fail("payload is not valid JSON") from exc


_NOT_JSON_OR_BASE64 = "payload is neither a JSON object nor strict base64 of one"


def _base64(data: bytes | str) -> bytes:
    try:
        return a2b_base64(data, strict_mode=True)
    except (BinasciiError, ValueError) as exc:
        raise fail(_NOT_JSON_OR_BASE64) from exc


def _empty(image: Any) -> bool:
    return isinstance(image, Mapping) and not image


def _build(raw: Any, unit: str, shard_id: str | None, sequence_number: str | None) -> ChangeRecord:
    """A parsed record -> ChangeRecord, in Python: the reference for every rule and error."""
    if type(raw) is not dict and not isinstance(raw, Mapping):
        raise fail("change record must be a JSON object")
    event_name, event_id, dynamodb = check_envelope(raw)
    get = dynamodb.get
    keys = get("Keys")
    if not keys:
        raise fail("Keys must be a non-empty attribute map", "dynamodb.Keys")
    keys = unmarshal(keys, path="dynamodb.Keys")
    # An empty image is an absent one: the DynamoDB Streams Kinesis Adapter writes
    # "OldImage": {} on an INSERT and "NewImage": {} on a REMOVE (a real image holds the key).
    new_image = get("NewImage")
    if new_image is not None and not _empty(new_image):
        if event_name == "REMOVE":
            raise fail("a REMOVE has no NewImage", "dynamodb.NewImage")
        new_image = unmarshal(new_image, path="dynamodb.NewImage")
    else:
        new_image = None
    old_image = get("OldImage")
    if old_image is not None and not _empty(old_image):
        if event_name == "INSERT":
            raise fail("an INSERT has no OldImage", "dynamodb.OldImage")
        old_image = unmarshal(old_image, path="dynamodb.OldImage")
    else:
        old_image = None
    micros = get("ApproximateCreationDateTime")
    if type(micros) is int and unit == "auto" and SECONDS_BELOW <= micros < MILLIS_BELOW:
        micros *= 1_000  # the common case: Kinesis milliseconds
    else:
        micros = timestamp_us(micros, unit)
    size = get("SizeBytes")
    if size is not None and (type(size) is not int or size < 0):
        raise fail("SizeBytes must be a non-negative integer", "dynamodb.SizeBytes")
    table = raw.get("tableName")
    if type(table) is not str:
        table = table_of(raw)
    region = raw.get("awsRegion")
    if region is not None and type(region) is not str:
        raise fail("awsRegion must be a string", "awsRegion")
    if sequence_number is None and get("SequenceNumber") is not None:
        sequence_number = check_sequence(dynamodb["SequenceNumber"], "dynamodb.SequenceNumber")
    identity = raw.get("userIdentity")
    return _construct(
        {
            "event_id": event_id,
            "event_name": event_name,
            "table_name": table,
            "aws_region": region,
            "keys": keys,
            "new_image": new_image,
            "old_image": old_image,
            "approximate_creation": EPOCH + ONE_US * micros,  # exact: int arithmetic
            "approximate_creation_us": micros,
            "size_bytes": size,
            "is_ttl_delete": identity is not None and is_ttl_delete(event_name, identity),
            "shard_id": shard_id,
            "sequence_number": sequence_number,
        }
    )


# The C speedups (see _speedups.c) return None, or the parsed payload, for whatever they
# leave to _build. They take 0 for "auto" and -1 for an unknown unit.
_fast_build: Callable[[dict[str, Any], int, str | None, str | None], dict[str, Any] | None] | None
_fast_build = None
_fast_decode: Callable[[bytes | str, int, str | None, str | None], Any] | None = None
_FACTORS = {"auto": 0, **US_PER_UNIT}
if ACCELERATED and SPEEDUPS is not None:
    _fast_build = SPEEDUPS.build
    if _PLAIN_MODEL:  # the C code fills the same slots as _construct
        SPEEDUPS.configure(ChangeRecord, _FIELDS_SET, *(BaseModel.__dict__[n] for n in _SLOTS))
        _fast_decode = SPEEDUPS.decode


def decode_record(
    payload: bytes | str | Mapping[str, Any],
    *,
    timestamp_unit: TimestampUnit = "auto",
    shard_id: str | None = None,
    sequence_number: str | None = None,
) -> ChangeRecord:
    """Decode one DynamoDB change record into a :class:`ChangeRecord`.

    Args:
        payload: the record as it sits in a Kinesis record's data (bytes or str of raw JSON,
            or base64 of it), or an already-parsed mapping (a DynamoDB Streams record from
            GetRecords or a Lambda event; ``B`` values may be bytes and
            ``ApproximateCreationDateTime`` an aware datetime there).
        timestamp_unit: unit of ``ApproximateCreationDateTime``; ``"auto"`` tells seconds,
            milliseconds and microseconds apart by magnitude.
        shard_id: the source shard, when known.
        sequence_number: the source sequence number, when known; otherwise taken from
            ``dynamodb.SequenceNumber`` (DynamoDB Streams format) if present.

    Returns:
        The frozen, fully decoded record.

    Raises:
        DecodeError: anything malformed, naming the field or attribute path and carrying
            the shard id and sequence number given.
    """
    try:
        if sequence_number is not None:
            check_sequence(sequence_number, "sequence_number")
        kind = type(payload)
        if kind is bytes or kind is str:
            raw = None
            if _fast_decode is not None:
                unit = _FACTORS.get(timestamp_unit, -1)
                raw = _fast_decode(payload, unit, shard_id, sequence_number)  # type: ignore[arg-type]
                if type(raw) is ChangeRecord:
                    return raw
            if raw is None:
                raw = _parse(payload)  # type: ignore[arg-type]
        elif isinstance(payload, bytearray | memoryview):
            raw = _parse(bytes(payload))
        elif isinstance(payload, Mapping):
            raw = payload
            if kind is dict and _fast_build is not None:
                unit = _FACTORS.get(timestamp_unit, -1)
                values = _fast_build(raw, unit, shard_id, sequence_number)  # type: ignore[arg-type]
                if values is not None:
                    return _construct(values)
        else:
            raise fail(f"payload must be bytes, str or a mapping, got {kind_of(payload)}")
        return _build(raw, timestamp_unit, shard_id, sequence_number)
    except DecodeError as exc:
        exc.shard_id = exc.shard_id or shard_id
        exc.sequence_number = exc.sequence_number or sequence_number
        raise
    except RecursionError:
        raise DecodeError(
            "record nested too deeply", shard_id=shard_id, sequence_number=sequence_number
        ) from None


def _kinesis_record(record: Mapping[str, Any]) -> ChangeRecord:
    kinesis = record.get("kinesis")
    if not isinstance(kinesis, Mapping):
        raise fail("kinesis must be an object", "kinesis")
    event_id = record.get("eventID")
    shard_id = None
    if type(event_id) is str and ":" in event_id:
        shard_id = event_id.split(":", 1)[0]
    sequence_number = check_sequence(kinesis.get("sequenceNumber"), "kinesis.sequenceNumber")
    data = kinesis.get("data")
    if type(data) is not str:
        raise fail("kinesis.data must be a base64 string", "kinesis.data")
    if _fast_decode is not None and data[:1] != "{":  # base64 never starts with "{"
        fast = _fast_decode(data, 0, shard_id, sequence_number)
        if type(fast) is ChangeRecord:
            return fast
    try:
        raw = orjson.loads(a2b_base64(data, strict_mode=True))
    except (BinasciiError, ValueError) as exc:  # orjson.JSONDecodeError is a ValueError
        raise DecodeError(
            "kinesis.data is not base64 of JSON",
            path="kinesis.data",
            shard_id=shard_id,
            sequence_number=sequence_number,
        ) from exc
    try:
        return decode_record(raw, shard_id=shard_id, sequence_number=sequence_number)
    except DecodeError as exc:
        exc.path = "kinesis.data" + (f".{exc.path}" if exc.path else "")
        raise


def decode_lambda_event(event: Mapping[str, Any]) -> list[ChangeRecord]:
    """Decode every record of a Lambda event from a Kinesis or DynamoDB Streams source.

    Kinesis source: each ``kinesis.data`` is base64 of a Kinesis-format change record; the
    shard id comes from ``eventID`` (``shardId-...:sequence``) and the sequence number from
    ``kinesis.sequenceNumber``. DynamoDB Streams source: each record is decoded as it is,
    its sequence number from ``dynamodb.SequenceNumber`` and its table from
    ``eventSourceARN``.

    Raises:
        DecodeError: the first malformed record, its path starting with ``Records[i]``.
    """
    records = event.get("Records") if isinstance(event, Mapping) else None
    if not isinstance(records, list):
        raise DecodeError("event must be an object with a Records array", path="Records")
    decoded = []
    for index, record in enumerate(records):
        try:
            if not isinstance(record, Mapping):
                raise fail("record must be an object")
            source = record.get("eventSource")
            if source == "aws:kinesis":
                decoded.append(_kinesis_record(record))
            elif source == "aws:dynamodb":
                decoded.append(decode_record(record))
            else:
                raise fail("eventSource must be aws:kinesis or aws:dynamodb", "eventSource")
        except DecodeError as exc:
            exc.path = f"Records[{index}]" + (f".{exc.path}" if exc.path else "")
            raise
    return decoded
