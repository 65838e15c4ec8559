"""Items -> synthesized change records: how every backfilled row enters the pipeline.

A snapshot page, an export line or a repair is not a change, but it is written exactly like
one: as a Kinesis Data Streams for DynamoDB record (an INSERT with the item as its NewImage,
or a REMOVE with its Keys) whose ``ApproximateCreationDateTime`` is the row's version in
microseconds, with no sequence number (it counts as -1, so a stream change of the same
microsecond wins) and a deterministic event id. The pipeline decodes, cleanses and applies
it through the one versioned path, so dead letters, the prune floor and concurrent writers
behave as for the stream; a dead-lettered backfill row can be replayed with ``ddbcdc dlq
replay`` like any other.

Pure: no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from ddbcdc.pipeline import SourceRecord
from ddbcdc.schema.mapping import TableMapping

__all__ = [
    "BACKFILL_EVENT_PREFIXES",
    "RecordMaker",
    "format_us",
    "is_backfill_row",
    "json_default",
    "key_digest",
    "key_from_json",
    "key_to_json",
    "now_us",
    "parse_time_us",
]

#: How the event id of a backfill row begins: ``snapshot:<run>:<key digest>`` (a scan page),
#: ``export:<export id>:<file>:<line>`` (an export import), ``verify:<run>:<key digest>`` (a
#: repair). A stream's event ids never do (Kinesis for DynamoDB writes hex digits).
BACKFILL_EVENT_PREFIXES = ("snapshot:", "export:", "verify:")
_ONE_US = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def now_us() -> int:
    """This machine's wall clock in epoch microseconds."""
    return time.time_ns() // 1000


def format_us(micros: int) -> str:
    """Epoch microseconds as an ISO-8601 UTC time (for messages)."""
    return (_EPOCH + micros * _ONE_US).isoformat().replace("+00:00", "Z")


def parse_time_us(text: str) -> int:
    """An ISO-8601 time (``Z`` or an offset; UTC when none) or epoch seconds -> microseconds.

    Raises:
        ValueError: neither.
    """
    try:
        seconds = float(text)
    except ValueError:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return (moment - _EPOCH) // _ONE_US
    return round(seconds * 1_000_000)


def is_backfill_row(payload: bytes) -> bool:
    """Whether a record (a dead letter's payload) is a backfill row, not a change: it is
    never written to the change log, replayed or not."""
    try:
        event_id = orjson.loads(payload).get("eventID")
    except (orjson.JSONDecodeError, AttributeError):
        return False
    return isinstance(event_id, str) and event_id.startswith(BACKFILL_EVENT_PREFIXES)


def json_default(value: Any) -> str:
    """orjson's fallback: B and BS values (bytes from boto3) as their base64 text."""
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def key_digest(keys: Mapping[str, Any]) -> str:
    """A short, stable digest of an item's key attributes (for event ids)."""
    text = orjson.dumps(keys, default=json_default, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(text, digest_size=10).hexdigest()


def key_to_json(key: Mapping[str, Any] | None) -> Any:
    """A DynamoDB key (``LastEvaluatedKey``, B values as bytes) -> JSON-ready (B as base64)."""
    if key is None:
        return None
    return orjson.loads(orjson.dumps(key, default=json_default))


def key_from_json(doc: Any) -> dict[str, Any] | None:
    """The inverse of :func:`key_to_json`: B values back to bytes, as boto3 sends them."""
    if doc is None:
        return None
    out: dict[str, Any] = {}
    for name, value in doc.items():
        (tag, raw), *_ = value.items()
        out[name] = {tag: base64.b64decode(raw)} if tag == "B" else {tag: raw}
    return out


class RecordMaker:
    """Builds the synthesized records of one table mapping.

    Args:
        mapping: the mapping whose source table the items come from.
        key_attributes: the DynamoDB attribute names of the table's key (hash, range).
    """

    def __init__(self, mapping: TableMapping, key_attributes: Sequence[str]) -> None:
        self.mapping = mapping
        self.key_attributes = tuple(key_attributes)
        self._table = mapping.source_table
        self._head = b'{"eventID":'
        self._insert = (
            b',"eventName":"INSERT","eventSource":"aws:dynamodb","tableName":'
            + orjson.dumps(self._table)
            + b',"dynamodb":{"ApproximateCreationDateTime":'
        )

    def keys_of(self, item: Mapping[str, Any]) -> dict[str, Any]:
        """The key attributes of a marshalled item (those it has)."""
        return {name: item[name] for name in self.key_attributes if name in item}

    def put(
        self, item: Mapping[str, Any], *, version_us: int, event_id: str, where: str | None = None
    ) -> SourceRecord:
        """An INSERT of ``item`` (marshalled, as DynamoDB returns it) at ``version_us``."""
        body = {
            "ApproximateCreationDateTime": version_us,
            "Keys": self.keys_of(item),
            "NewImage": item,
        }
        return self._record("INSERT", event_id, body, where)

    def put_json(
        self,
        item: Mapping[str, Any],
        text: bytes,
        *,
        version_us: int,
        event_id: str,
        where: str | None = None,
    ) -> SourceRecord:
        """:meth:`put` of an item whose exact JSON text is ``text`` (an export line's): the
        text is reused as the NewImage instead of serialized again."""
        keys = orjson.dumps(self.keys_of(item), default=json_default)
        head = (self._head, orjson.dumps(event_id), self._insert, b"%d" % version_us)
        data = b"".join((*head, b',"Keys":', keys, b',"NewImage":', text, b"}}"))
        return SourceRecord(data, partition_key=where)

    def remove(
        self,
        keys: Mapping[str, Any],
        *,
        version_us: int,
        event_id: str,
        where: str | None = None,
        old_image: Mapping[str, Any] | None = None,
    ) -> SourceRecord:
        """A REMOVE of the item with ``keys`` (marshalled) at ``version_us``; with the item's
        last image (``old_image``, marshalled) when it is known."""
        body: dict[str, Any] = {"ApproximateCreationDateTime": version_us, "Keys": dict(keys)}
        if old_image is not None:
            body["OldImage"] = old_image
        return self._record("REMOVE", event_id, body, where)

    def _record(
        self, event_name: str, event_id: str, body: dict[str, Any], where: str | None
    ) -> SourceRecord:
        envelope = {
            "eventID": event_id,
            "eventName": event_name,
            "eventSource": "aws:dynamodb",
            "tableName": self._table,
            "dynamodb": body,
        }
        # ``where`` (the export file and line, the snapshot segment) lands in a dead
        # letter's partition_key column, to find the source of a row that did not apply.
        return SourceRecord(orjson.dumps(envelope, default=json_default), partition_key=where)
