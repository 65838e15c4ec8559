"""A faster reader of the MultiLangDaemon's messages, inside amazon_kclpy's own protocol.

kclpy parses every line with ``json.loads`` and an ``object_hook`` that builds a
``messages.Record`` per record (a ``datetime`` each) and base64-decodes on access. For a
10,000-record batch that is most of a shard processor's time outside ddbcdc's own work.

:func:`install` swaps only the parsing of lines on a ``kcl.KCLProcess``: lines are parsed
with ``orjson``; a ``processRecords`` message gets kclpy's own ``ProcessRecordsInput`` whose
records are :class:`RawRecord` (the fields ddbcdc reads, the data already base64-decoded by
``binascii.a2b_base64``); every other message (all small) is decoded by kclpy as before.
Dispatch, status replies, checkpoints and their errors stay kclpy's.
"""

from __future__ import annotations

import json
from binascii import a2b_base64
from typing import Any, NamedTuple

import orjson
from amazon_kclpy import dispatch, messages

__all__ = ["RawRecord", "install", "load_action"]


class RawRecord(NamedTuple):
    """One record of a ``processRecords`` message, as ddbcdc uses it."""

    binary_data: bytes
    sequence_number: str
    sub_sequence_number: int | None
    partition_key: str
    timestamp_millis: int | None  # ApproximateArrivalTimestamp, as kclpy names it


def _record(raw: dict[str, Any]) -> RawRecord:
    arrival = raw.get("approximateArrivalTimestamp")
    return RawRecord(
        a2b_base64(raw["data"]),
        raw["sequenceNumber"],
        raw.get("subSequenceNumber"),
        raw["partitionKey"],
        None if arrival is None else int(arrival),
    )


def load_action(line: str | bytes) -> Any:
    """Parse one line from the daemon into the object kclpy would dispatch."""
    message = orjson.loads(line)
    if isinstance(message, dict) and message.get("action") == "processRecords":
        message["records"] = [_record(r) for r in message["records"]]
        return messages.ProcessRecordsInput(message)
    # Everything else is small: kclpy's own decoding, its errors included.
    return json.loads(line, object_hook=dispatch.message_decode)


def install(process: Any) -> Any:
    """Use :func:`load_action` for every line ``process`` (a ``kcl.KCLProcess``) reads,
    checkpoint replies included (its checkpointer shares the IO handler). Returns it."""
    process.io_handler.load_action = load_action
    return process
