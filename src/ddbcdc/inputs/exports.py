"""DynamoDB export lines -> Kinesis-format change records, pure.

The version rule (a change's version is its ``ApproximateCreationDateTime`` in microseconds,
then its sequence number, then its event id; see docs/correctness.md):

- A **full export** line, ``{"Item": {...}}``, is the item as it was at the export time. It
  becomes an INSERT whose version is that time minus the clock-skew margin
  (:func:`ddbcdc.settings.read_version_us`; ``--export-time``: the ``exportTime`` of the export's
  ``manifest-summary.json``); a line carries no time of its own, so without one it is
  refused. The margin is there because the export's clock and the one that stamps the
  stream's changes are different AWS clocks: a change made after the export, stamped up to
  the margin earlier, must still win over the export's row. A change made more than the
  margin before the export time is in the export; at the same microsecond the live change
  wins (it has a sequence number, an export line none).
- An **incremental export** line, ``{"Metadata": {"WriteTimestampMicros": ...}, "Keys": ...,
  "NewImage": ..., "OldImage": ...}``, is a change at ``WriteTimestampMicros``: no
  ``NewImage`` is a REMOVE, ``NewImage`` with ``OldImage`` a MODIFY, ``NewImage`` alone an
  INSERT (with the ``NEW_IMAGE`` view type every write is an INSERT; both are upserts).

Keys: an incremental line has its own; a full-export item gives the values of the table's
key attributes (from its mapping, or ``--key``). The event id is derived from the content
(``export-`` and a BLAKE2b digest of the version, table and item), so reading the same file
again gives the same changes, which are applied once.
"""

from __future__ import annotations

from dataclasses import dataclass
from hashlib import blake2b
from typing import Any

import orjson

from ddbcdc.settings import read_version_us

__all__ = ["ExportOptions", "export_item", "incremental_record"]


@dataclass(frozen=True, slots=True)
class ExportOptions:
    """What export lines need from outside, and the table of records that name none.

    Attributes:
        table: ``tableName`` of synthesized records (and of DynamoDB Streams records that
            name no table); None leaves it out (a single mapping then takes them).
        export_time_us: a full export's time, epoch microseconds.
        key_attributes: the table's key attribute names, for full-export items.
        margin_us: the clock-skew margin (``DDBCDC_CLOCK_SKEW_MARGIN``) in microseconds,
            subtracted from ``export_time_us`` (:func:`ddbcdc.settings.read_version_us`).
    """

    table: str | None = None
    export_time_us: int | None = None
    key_attributes: tuple[str, ...] | None = None
    margin_us: int = 0


def _attribute_map(value: Any, path: str) -> dict[str, Any]:
    if type(value) is not dict or not value:
        raise ValueError(f"{path} must be a non-empty attribute map")
    return value


def _event_id(micros: int, table: str | None, *parts: Any) -> str:
    digest = blake2b(digest_size=16)
    digest.update(f"{micros}\x00{table or ''}\x00".encode())
    for part in parts:
        digest.update(orjson.dumps(part, option=orjson.OPT_SORT_KEYS))
    return f"export-{digest.hexdigest()}"


def _record(
    options: ExportOptions, event: str, micros: int, dynamodb: dict[str, Any], *parts: Any
) -> bytes:
    record: dict[str, Any] = {
        "eventID": _event_id(micros, options.table, event, *parts),
        "eventName": event,
        "eventSource": "aws:dynamodb",
        "recordFormat": "application/json",
        "dynamodb": {"ApproximateCreationDateTime": micros, **dynamodb},
    }
    if options.table:
        record["tableName"] = options.table
    return orjson.dumps(record)


def export_item(line: dict[str, Any], options: ExportOptions) -> bytes:
    """A full export's ``{"Item": {...}}`` as an INSERT at the export time minus the margin.

    Raises:
        ValueError: no export time or key attributes known, or the item lacks a key.
    """
    item = _attribute_map(line["Item"], "Item")
    if options.export_time_us is None:
        raise ValueError(
            "a full-export item carries no time of its own: pass --export-time (the "
            "exportTime in the export's manifest-summary.json)"
        )
    if not options.key_attributes:
        raise ValueError(
            "the table's key attributes are unknown: pass --table with a mapping, or --key"
        )
    missing = [name for name in options.key_attributes if name not in item]
    if missing:
        raise ValueError(f"Item has no key attribute {', '.join(missing)}")
    keys = {name: item[name] for name in options.key_attributes}
    dynamodb = {"Keys": keys, "NewImage": item}
    version = read_version_us(options.export_time_us, options.margin_us)
    return _record(options, "INSERT", version, dynamodb, item)


def _micros(metadata: Any) -> int:
    value = metadata.get("WriteTimestampMicros") if type(metadata) is dict else None
    if type(value) is dict and set(value) == {"N"}:
        value = value["N"]
    if type(value) is str and value.isdigit() and value.isascii():
        value = int(value)
    if type(value) is not int or value < 0:
        raise ValueError("Metadata.WriteTimestampMicros must be a non-negative integer")
    return value


def incremental_record(line: dict[str, Any], options: ExportOptions) -> bytes:
    """An incremental export line as the change it records.

    Raises:
        ValueError: no valid ``WriteTimestampMicros`` or ``Keys``, or a bad image.
    """
    micros = _micros(line.get("Metadata"))
    keys = _attribute_map(line.get("Keys"), "Keys")
    new, old = line.get("NewImage"), line.get("OldImage")
    dynamodb: dict[str, Any] = {"Keys": keys}
    if new is not None:
        dynamodb["NewImage"] = _attribute_map(new, "NewImage")
    if old is not None:
        dynamodb["OldImage"] = _attribute_map(old, "OldImage")
    event = "REMOVE" if new is None else "MODIFY" if old is not None else "INSERT"
    return _record(options, event, micros, dynamodb, keys, new, old)
