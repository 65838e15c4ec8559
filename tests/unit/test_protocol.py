"""The faster multilang reader gives the processor what kclpy's own reader gives it."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from amazon_kclpy import dispatch, messages

from ddbcdc.worker.protocol import RawRecord, load_action

RECORDS = [
    {
        "action": "record",
        "data": base64.b64encode(data).decode(),
        "partitionKey": f"pk{n}",
        "sequenceNumber": str(49590338271490256608559692538361571095921575989136588898 + n),
        "subSequenceNumber": n or None,
        "approximateArrivalTimestamp": 1_700_000_000_000 + n,
    }
    for n, data in enumerate([b'{"a": 1}', b"", b"\xff\x00 binary", "é".encode() * 300])
]


def kclpy(line: str) -> Any:
    return json.loads(line, object_hook=dispatch.message_decode)


def test_process_records_match_kclpy_s_records() -> None:
    line = json.dumps({"action": "processRecords", "millisBehindLatest": 42, "records": RECORDS})
    ours, theirs = load_action(line), kclpy(line)
    assert isinstance(ours, messages.ProcessRecordsInput)
    assert (ours.action, ours.millis_behind_latest) == (theirs.action, theirs.millis_behind_latest)
    assert all(isinstance(r, RawRecord) for r in ours.records)
    for mine, real in zip(ours.records, theirs.records, strict=True):
        assert mine.binary_data == real.binary_data
        assert mine.sequence_number == real.sequence_number
        assert mine.sub_sequence_number == real.sub_sequence_number
        assert mine.partition_key == real.partition_key
        assert mine.timestamp_millis == real.timestamp_millis  # the arrival in the stream


@pytest.mark.parametrize(
    "message",
    [
        {"action": "initialize", "shardId": "s1", "sequenceNumber": "1", "subSequenceNumber": 0},
        {"action": "checkpoint", "sequenceNumber": "5", "subSequenceNumber": None},
        {
            "action": "checkpoint",
            "sequenceNumber": "5",
            "subSequenceNumber": None,
            "error": "ThrottlingException",
        },
        {"action": "shutdownRequested"},
        {"action": "leaseLost"},
        {"action": "shardEnded"},
        {"action": "processRecords", "millisBehindLatest": None, "records": []},
    ],
)
def test_other_messages_are_kclpy_s_own(message: dict[str, Any]) -> None:
    line = json.dumps(message)
    ours, theirs = load_action(line), kclpy(line)
    assert type(ours) is type(theirs)
    if isinstance(theirs, messages.CheckpointInput):
        assert ours.error == theirs.error and ours.sequence_number == theirs.sequence_number
    else:
        assert ours.action == theirs.action


def test_unknown_actions_fail_as_in_kclpy() -> None:
    with pytest.raises(dispatch.MalformedAction):
        load_action('{"action": "dance"}')
