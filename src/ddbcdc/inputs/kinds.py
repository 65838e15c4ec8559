"""One record as a file holds it -> :class:`~ddbcdc.pipeline.SourceRecord`, pure.

Kinds of record, told apart by their members:

==================  ===============================================  =====================
kind                members                                          becomes
==================  ===============================================  =====================
``change``          ``dynamodb`` (Kinesis Data Streams for DynamoDB  its own text (times in
                    or DynamoDB Streams format, Lambda's too)        ISO-8601 made numbers)
``lambda-kinesis``  ``kinesis.data`` (a Lambda Kinesis event's)      the data, base64-decoded
``kinesis``         ``Data``, ``SequenceNumber`` (Kinesis            the data, base64-decoded
                    GetRecords, as ``aws kinesis get-records``)
``export``          ``Item`` (a DynamoDB full export's line)         a synthesized INSERT
``incremental``     ``Keys`` and ``Metadata`` (incremental export)   a synthesized change
==================  ===============================================  =====================

Kinesis records keep their sequence number and partition key (and, from a Lambda event,
the shard id in ``eventID``). Export lines become Kinesis-format change records (see
:mod:`ddbcdc.inputs.exports`), so the rest of the pipeline is unchanged.
"""

from __future__ import annotations

from binascii import Error as BinasciiError
from binascii import a2b_base64
from collections.abc import Mapping
from typing import Any

import orjson

from ddbcdc.decode.timestamps import epoch_us, parse_timestamp
from ddbcdc.inputs.documents import raw_bytes
from ddbcdc.inputs.exports import ExportOptions, export_item, incremental_record
from ddbcdc.pipeline import SourceRecord

__all__ = ["KIND_NAMES", "RecordError", "container_name", "kind_of", "to_source"]

KIND_NAMES = {
    "change": "change record",
    "lambda-kinesis": "Lambda Kinesis record",
    "kinesis": "Kinesis record",
    "export": "DynamoDB export item",
    "incremental": "DynamoDB incremental export record",
}


class RecordError(ValueError):
    """This record cannot become a SourceRecord (the reader adds form and position)."""


def kind_of(value: Any) -> str | None:
    """The kind of a parsed record, or None when it is none of them."""
    if type(value) is not dict:
        return None
    if "kinesis" in value:  # before eventName: Lambda names these aws:kinesis:record
        return "lambda-kinesis"
    if "Data" in value and "SequenceNumber" in value:
        return "kinesis"
    if "dynamodb" in value or "eventName" in value:
        return "change"
    if "Item" in value:
        return "export"
    if "Keys" in value and ("Metadata" in value or "NewImage" in value or "OldImage" in value):
        return "incremental"
    return None


def container_name(kind: str | None, first: Any) -> str:
    """What an object with a ``Records`` array whose first record is ``first`` is."""
    if kind == "lambda-kinesis":
        return "Lambda event (Kinesis)"
    if kind == "kinesis":
        return "aws kinesis get-records output"
    if kind == "change" and isinstance(first, Mapping):
        if "eventSourceARN" in first:
            return "Lambda event (DynamoDB Streams)"
        dynamodb = first.get("dynamodb")
        if isinstance(dynamodb, Mapping) and "SequenceNumber" in dynamodb:
            return "aws dynamodbstreams get-records output"
    name = KIND_NAMES.get(kind or "", "record")
    return f"object with a Records array of {name}s"


def _described(value: Any) -> str:
    if not isinstance(value, dict):
        return f"a JSON {type(value).__name__.replace('dict', 'object')}"
    names = ", ".join(sorted(value)[:6]) + (", ..." if len(value) > 6 else "")
    return f"an object with members {names or '(none)'}"


def _base64(value: Any, path: str) -> bytes:
    if type(value) is not str:
        raise RecordError(f"{path} must be a base64 string")
    try:
        return a2b_base64(value, strict_mode=True)
    except (BinasciiError, ValueError):
        raise RecordError(f"{path} is not strict base64") from None


def _text(value: Any) -> str | None:
    return value if type(value) is str else None


def _change(value: dict[str, Any], raw: str | None, options: ExportOptions) -> SourceRecord:
    dynamodb = value.get("dynamodb")
    sequence = None
    changed = False
    if isinstance(dynamodb, dict):
        stamp = dynamodb.get("ApproximateCreationDateTime")
        if type(stamp) is str:  # the AWS CLI prints times in ISO-8601
            try:
                dynamodb["ApproximateCreationDateTime"] = epoch_us(parse_timestamp(stamp))
            except ValueError:
                raise RecordError(
                    "dynamodb.ApproximateCreationDateTime is neither a number nor a time"
                ) from None
            changed = True
        text = _text(dynamodb.get("SequenceNumber"))
        sequence = text if text is not None and text.isdigit() and text.isascii() else None
    if options.table and "tableName" not in value and "eventSourceARN" not in value:
        value["tableName"] = options.table
        changed = True
    if changed or raw is None:
        try:
            return SourceRecord(orjson.dumps(value), sequence_number=sequence)
        except orjson.JSONEncodeError as exc:
            if raw is None:
                raise RecordError(f"cannot be written back as JSON: {exc}") from None
            # not UTF-8, or an integer past 64 bits: as it is, for decode to dead-letter
    return SourceRecord(raw_bytes(raw), sequence_number=sequence)


def to_source(value: Any, raw: str | None, options: ExportOptions) -> SourceRecord:
    """One parsed record (with its exact text when known) as a SourceRecord.

    Raises:
        RecordError: not a record of any kind, or one that cannot be converted.
    """
    kind = kind_of(value)
    if kind == "change":
        return _change(value, raw, options)
    if kind == "lambda-kinesis":
        kinesis = value["kinesis"]
        if not isinstance(kinesis, dict):
            raise RecordError("kinesis must be an object")
        event_id = _text(value.get("eventID")) or ""
        return SourceRecord(
            _base64(kinesis.get("data"), "kinesis.data"),
            shard_id=event_id.split(":", 1)[0] if ":" in event_id else None,
            sequence_number=_text(kinesis.get("sequenceNumber")),
            partition_key=_text(kinesis.get("partitionKey")),
        )
    if kind == "kinesis":
        return SourceRecord(
            _base64(value["Data"], "Data"),
            sequence_number=_text(value["SequenceNumber"]),
            partition_key=_text(value.get("PartitionKey")),
        )
    try:
        if kind == "export":
            return SourceRecord(export_item(value, options))
        if kind == "incremental":
            return SourceRecord(incremental_record(value, options))
    except ValueError as exc:
        raise RecordError(str(exc)) from None
    raise RecordError(
        f"not a change record, Kinesis record or DynamoDB export line: {_described(value)}"
    )
