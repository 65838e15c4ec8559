"""The records the DynamoDB Streams Kinesis Adapter (2.0.1) hands a KCL record processor.

The fixtures were captured from the real adapter (``tests/tools/capture_adapter_records.py``):
through the local stack's DynamoDB Streams front (whole-second timestamps, as DynamoDB
Streams sends them) and against moto's own stream (milliseconds). Their shape: the DynamoDB
Streams record as JSON, ``ApproximateCreationDateTime`` in epoch milliseconds, ``{}`` for an
image the change does not have, no table name.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from ddbcdc import DecodeError, decode_record
from ddbcdc.errors import ConfigurationError
from ddbcdc.pipeline import Pipeline, SourceRecord
from ddbcdc.schema.mapping import TableMapping, load_mappings
from speedup_support import check_build

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "adapter"
CAPTURES = sorted(FIXTURES.glob("*.jsonl"))
MAPPINGS = load_mappings(Path(__file__).resolve().parents[2] / "schemas" / "tables")


def captured(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_text().splitlines()]


def every_record() -> list[Any]:
    return [
        pytest.param(r, id=f"{p.stem}-{i}") for p in CAPTURES for i, r in enumerate(captured(p))
    ]


@pytest.mark.parametrize("line", every_record())
def test_every_captured_record_decodes_exactly_in_c_and_python(line: dict[str, Any]) -> None:
    data = line["data"].encode()
    raw = orjson.loads(data)
    record = decode_record(data, shard_id=line["shard"], sequence_number=line["sequenceNumber"])
    check_build(raw, "auto", line["shard"], line["sequenceNumber"], hot=True)
    dynamodb = raw["dynamodb"]
    assert record.event_name == raw["eventName"]
    assert record.table_name is None
    assert record.sequence_number == line["sequenceNumber"] == dynamodb["SequenceNumber"]
    # Epoch milliseconds, exactly.
    assert record.approximate_creation_us == dynamodb["ApproximateCreationDateTime"] * 1000
    if record.event_name == "INSERT":
        assert dynamodb["OldImage"] == {} and record.old_image is None
        assert record.new_image is not None and record.new_image["userid"] in (1, 7)
    elif record.event_name == "REMOVE":
        assert dynamodb["NewImage"] == {} and record.new_image is None
        assert record.old_image is not None
    else:
        assert record.new_image is not None and record.old_image is not None


def test_the_front_capture_has_whole_seconds_and_keeps_every_value_exact() -> None:
    lines = captured(FIXTURES / "front-same-second.jsonl")
    records = [
        decode_record(x["data"], shard_id=x["shard"], sequence_number=x["sequenceNumber"])
        for x in lines
    ]
    assert [r.event_name for r in records] == ["INSERT", "MODIFY", "MODIFY", "REMOVE"]
    assert all(r.approximate_creation_us % 1_000_000 == 0 for r in records)
    # Three changes in one second: only their sequence numbers order them.
    assert len({r.approximate_creation_us for r in records[:3]}) == 1
    numbers = [int(r.sequence_number or "") for r in records]
    assert numbers == sorted(numbers)
    item = records[0].new_image
    assert item is not None
    assert item["score"] == Decimal("-0.000120") and str(item["score"]) == "-0.000120"
    assert item["lucky"] == {Decimal("7"), Decimal("1E+3")}
    assert item["photo"] == b"\xff\xd8\xff"
    assert item["keys"] == {b"\x01", b"\x02"}
    assert item["langs"] == {"COBOL", "FLOW-MATIC"}
    assert item["active"] is False and item["manager"] is None
    assert item["ranks"] == [1, "two", []]
    assert item["address"] == {"city": "Arlington", "zip": 22201}
    assert "manager" not in (records[1].new_image or {})


def _adapter_record(event: str, new: Any, old: Any) -> dict[str, Any]:
    dynamodb = {
        "ApproximateCreationDateTime": 1_796_412_359_000,
        "Keys": {"userid": {"N": "7"}},
        "SequenceNumber": "100000000000000000001",
        "SizeBytes": 20,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    if new is not None:
        dynamodb["NewImage"] = new
    if old is not None:
        dynamodb["OldImage"] = old
    return {
        "eventID": "e" * 32,
        "eventName": event,
        "eventSource": "aws:dynamodb",
        "dynamodb": dynamodb,
    }


def test_an_empty_image_is_absent_but_a_real_image_on_the_wrong_event_is_refused() -> None:
    image = {"userid": {"N": "7"}}
    insert = decode_record(_adapter_record("INSERT", image, {}))
    assert insert.old_image is None and insert.new_image == {"userid": 7}
    remove = decode_record(_adapter_record("REMOVE", {}, image))
    assert remove.new_image is None and remove.old_image == {"userid": 7}
    with pytest.raises(DecodeError, match="an INSERT has no OldImage"):
        decode_record(_adapter_record("INSERT", image, image))
    with pytest.raises(DecodeError, match="a REMOVE has no NewImage"):
        decode_record(_adapter_record("REMOVE", image, image))


def test_a_ttl_delete_as_the_adapter_writes_its_identity_is_one() -> None:
    raw = _adapter_record("REMOVE", {}, {"userid": {"N": "7"}})
    raw["userIdentity"] = {"principalId": "dynamodb.amazonaws.com", "type": "Service"}
    assert decode_record(orjson.dumps(raw)).is_ttl_delete
    check_build(raw, "auto", "shardId-1", "100000000000000000001", hot=True)


def _pipeline(mappings: tuple[TableMapping, ...], source_table: str | None) -> Pipeline:
    engine = sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")  # never used
    return Pipeline(engine=engine, mappings=mappings, source_table=source_table)


def test_records_without_a_table_go_to_the_stream_s_table() -> None:
    line = captured(FIXTURES / "front-same-second.jsonl")[0]
    source = SourceRecord(line["data"].encode(), line["shard"], line["sequenceNumber"])
    prepared = _pipeline(MAPPINGS, "customers").prepare([source])
    assert not prepared.poison
    assert [c.event_id for c in prepared.changes] == [orjson.loads(line["data"])["eventID"]]
    with pytest.raises(
        ConfigurationError, match="no table mapping for the stream's table 'orders'"
    ):
        _pipeline(MAPPINGS, "orders")
