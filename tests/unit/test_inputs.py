"""Every input form ``ddbcdc decode`` and ``apply`` read, detected from the content."""

from __future__ import annotations

import base64
import gzip
import io
import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from ddbcdc.cli import main
from ddbcdc.decode.record import ChangeRecord, decode_lambda_event, decode_record
from ddbcdc.errors import InputError
from ddbcdc.inputs import ExportOptions, InputReader
from ddbcdc.pipeline import SourceRecord

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
VALID = sorted((FIXTURES / "records" / "valid").glob("*.json"))
KINESIS_EVENT = FIXTURES / "lambda" / "kinesis-event.json"
DYNAMODB_EVENT = FIXTURES / "lambda" / "dynamodb-event.json"
MAY_1_US = 1_714_521_600_000_000


def fixture(path: Path) -> dict[str, Any]:
    parsed: dict[str, Any] = orjson.loads(path.read_bytes())
    return parsed


def read(data: bytes, **options: Any) -> tuple[str, list[tuple[int | str, Any]]]:
    reader = InputReader(io.BytesIO(data), options=ExportOptions(**options))
    found = list(reader.located())
    assert reader.stopped is None, reader.stopped
    return reader.form, found


def decoded(found: list[tuple[int | str, Any]]) -> list[ChangeRecord]:
    out = []
    for _, record in found:
        assert isinstance(record, SourceRecord), record
        out.append(
            decode_record(
                record.data, shard_id=record.shard_id, sequence_number=record.sequence_number
            )
        )
    return out


def reference() -> list[ChangeRecord]:
    return [decode_record(fixture(path)) for path in VALID]


def test_json_lines_pass_every_line_through_unparsed() -> None:
    lines = [orjson.dumps(fixture(path)) for path in VALID]
    data = b"\n".join([lines[0], b"", b"  ", *lines[1:], b"not a record"]) + b"\n"
    form, found = read(data)
    assert form == "JSON Lines of change records"
    assert [where for where, _ in found] == [1, *range(4, 4 + len(lines) - 1), 4 + len(lines) - 1]
    assert [r.data for _, r in found] == [*lines, b"not a record"]
    assert decoded(found[:-1]) == reference()


def test_base64_lines() -> None:
    lines = [base64.b64encode(orjson.dumps(fixture(path))) for path in VALID]
    form, found = read(b"\n".join(lines))
    assert form == "JSON Lines of change records (base64)"
    assert decoded(found) == reference()


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_one_pretty_printed_record(path: Path) -> None:
    form, found = read(path.read_bytes())
    assert form == "one change record (JSON document)"
    assert [where for where, _ in found] == ["the record at line 1"]
    assert decoded(found) == [decode_record(fixture(path))]


def test_json_array_compact_and_pretty() -> None:
    records = [fixture(path) for path in VALID]
    for data in (orjson.dumps(records), orjson.dumps(records, option=orjson.OPT_INDENT_2)):
        form, found = read(data)
        assert form == "JSON array of change records"
        assert decoded(found) == reference()
    _, found = read(json.dumps(records, indent=2).encode())
    assert found[1][0] == f"[1] (line {2 + json.dumps(records[0], indent=2).count(chr(10)) + 1})"


def test_lambda_kinesis_event_keeps_shard_sequence_and_partition_key() -> None:
    form, found = read(KINESIS_EVENT.read_bytes())
    assert form == "Lambda event (Kinesis)"
    event = fixture(KINESIS_EVENT)
    assert decoded(found) == decode_lambda_event(event)
    first = found[0][1]
    assert first.shard_id == "shardId-000000000000"
    assert first.sequence_number == event["Records"][0]["kinesis"]["sequenceNumber"]
    assert first.partition_key == event["Records"][0]["kinesis"]["partitionKey"]
    assert first.data == base64.b64decode(event["Records"][0]["kinesis"]["data"])
    assert found[0][0].startswith("Records[0] (line ")


def test_lambda_dynamodb_event() -> None:
    form, found = read(DYNAMODB_EVENT.read_bytes())
    assert form == "Lambda event (DynamoDB Streams)"
    assert decoded(found) == decode_lambda_event(fixture(DYNAMODB_EVENT))


def test_aws_kinesis_get_records_output() -> None:
    changes = [orjson.dumps(fixture(p)) for p in VALID if p.stem.startswith("kinesis")]
    output = {
        "MillisBehindLatest": 0,  # members in any order, around the Records
        "Records": [
            {
                "SequenceNumber": f"4959033827149025660855969253836157109592157598913658{i:04d}",
                "ApproximateArrivalTimestamp": "2024-05-01T12:00:00.123000+00:00",
                "Data": base64.b64encode(data).decode(),
                "PartitionKey": f"pk-{i}",
            }
            for i, data in enumerate(changes)
        ],
        "NextShardIterator": "AAAAAAAAAAE=",
    }
    form, found = read(json.dumps(output, indent=4).encode())
    assert form == "aws kinesis get-records output"
    assert [r.data for _, r in found] == changes
    assert [r.partition_key for _, r in found] == [f"pk-{i}" for i in range(len(changes))]
    assert [r.sequence_number for _, r in found] == [r["SequenceNumber"] for r in output["Records"]]
    records = decoded(found)
    assert [r.sequence_number for r in records] == [r.sequence_number for _, r in found]


def test_aws_dynamodbstreams_get_records_output_with_iso_times_and_a_table() -> None:
    record = fixture(FIXTURES / "records" / "valid" / "streams-insert-s.json")
    record.pop("eventSourceARN", None)  # GetRecords names no table; Lambda adds the ARN
    record["dynamodb"]["ApproximateCreationDateTime"] = "2024-05-01T02:00:00.000123+02:00"
    output = {"Records": [record], "NextShardIterator": "arn:aws:dynamodb:..."}
    form, found = read(json.dumps(output, indent=4).encode(), table="customers")
    assert form == "aws dynamodbstreams get-records output"
    (change,) = decoded(found)
    assert change.approximate_creation_us == MAY_1_US + 123
    assert change.table_name == "customers"
    assert change.sequence_number == record["dynamodb"]["SequenceNumber"]
    assert found[0][1].sequence_number == record["dynamodb"]["SequenceNumber"]


def export_line(userid: int, **more: Any) -> bytes:
    item = {"userid": {"N": str(userid)}, "first_name": {"S": "Ada"}, **more}
    return orjson.dumps({"Item": item})


def test_full_export_items_are_inserts_at_the_export_time() -> None:
    data = b"\n".join(export_line(i) for i in (1, 2, 3)) + b"\n"
    options = {"export_time_us": MAY_1_US, "key_attributes": ("userid",), "table": "customers"}
    form, found = read(data, **options)
    assert form == "JSON Lines of DynamoDB export items"
    records = decoded(found)
    assert [r.event_name for r in records] == ["INSERT"] * 3
    assert [r.keys for r in records] == [{"userid": i} for i in (1, 2, 3)]
    assert all(r.approximate_creation_us == MAY_1_US for r in records)
    assert all(r.table_name == "customers" for r in records)
    assert records[0].new_image == {"userid": 1, "first_name": "Ada"}
    # the event id follows from the content: the same file gives the same ids
    again = decoded(read(data, **options)[1])
    assert [r.event_id for r in again] == [r.event_id for r in records]
    assert len({r.event_id for r in records}) == 3
    later = decoded(read(data, **{**options, "export_time_us": MAY_1_US + 1})[1])
    assert later[0].event_id != records[0].event_id


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"key_attributes": ("userid",)}, "pass --export-time"),
        ({"export_time_us": MAY_1_US}, "key attributes are unknown"),
        ({"export_time_us": MAY_1_US, "key_attributes": ("id",)}, "no key attribute id"),
    ],
)
def test_full_export_items_without_a_time_or_keys_are_refused(
    options: dict[str, Any], message: str
) -> None:
    _, found = read(export_line(1) + b"\n" + export_line(2), **options)
    assert [where for where, _ in found] == [1, 2]
    for _, error in found:
        assert isinstance(error, InputError)
        assert message in str(error)
        assert str(error).startswith("JSON Lines of DynamoDB export items, line ")


def test_incremental_export_lines_remove_modify_insert() -> None:
    keys = {"userid": {"N": "7"}}
    image = {"userid": {"N": "7"}, "first_name": {"S": "Grace"}}
    lines = [
        {"Metadata": {"WriteTimestampMicros": {"N": "1714521600000001"}}, "Keys": keys,
         "NewImage": image},
        {"Metadata": {"WriteTimestampMicros": 1714521600000002}, "Keys": keys,
         "NewImage": image, "OldImage": image},
        {"Metadata": {"WriteTimestampMicros": {"N": "1714521600000003"}}, "Keys": keys,
         "OldImage": image},
        {"Metadata": {"WriteTimestampMicros": {"N": "1714521600000004"}}, "Keys": keys},
    ]  # fmt: skip
    form, found = read(b"\n".join(orjson.dumps(line) for line in lines))
    assert form == "JSON Lines of DynamoDB incremental export records"
    records = decoded(found)
    assert [r.event_name for r in records] == ["INSERT", "MODIFY", "REMOVE", "REMOVE"]
    assert [r.approximate_creation_us for r in records] == [MAY_1_US + i for i in (1, 2, 3, 4)]
    assert records[1].old_image == records[1].new_image == {"userid": 7, "first_name": "Grace"}
    assert records[3].new_image is None and records[3].old_image is None
    assert records[0].table_name is None  # no --table: the single mapping takes it


def test_incremental_export_line_without_a_time_names_it() -> None:
    line = {"Metadata": {}, "Keys": {"userid": {"N": "7"}}, "NewImage": {"userid": {"N": "7"}}}
    _, found = read(orjson.dumps(line))
    assert "Metadata.WriteTimestampMicros" in str(found[0][1])


def test_gzip_compressed_input_as_exports_come() -> None:
    data = gzip.compress(b"\n".join(export_line(i) for i in (1, 2)) + b"\n")
    data += gzip.compress(export_line(3))  # cat *.json.gz: one stream of gzip members
    form, found = read(data, export_time_us=MAY_1_US, key_attributes=("userid",))
    assert form == "gzip-compressed JSON Lines of DynamoDB export items"
    assert [r.keys for r in decoded(found)] == [{"userid": 1}, {"userid": 2}, {"userid": 3}]


def test_lambda_events_one_per_line() -> None:
    compact = orjson.dumps(fixture(KINESIS_EVENT)) + b"\n" + orjson.dumps(fixture(DYNAMODB_EVENT))
    form, found = read(compact)
    assert form == "JSON Lines, each a Lambda event (Kinesis)"
    expected = decode_lambda_event(fixture(KINESIS_EVENT)) + decode_lambda_event(
        fixture(DYNAMODB_EVENT)
    )
    assert decoded(found) == expected
    assert found[0][0] == "line 1, Records[0]"


def test_several_documents_one_after_the_other() -> None:
    one, two = (json.dumps(fixture(p), indent=2).encode() for p in VALID[:2])
    _, found = read(one + b"\n" + two + b"\n" + KINESIS_EVENT.read_bytes())
    assert found[1][0].startswith("document 2, the record at line ")
    assert found[2][0].startswith("document 3, Records[0] (line ")
    assert len(found) == 2 + len(fixture(KINESIS_EVENT)["Records"])


def test_a_record_of_no_known_kind_is_an_error_in_its_place() -> None:
    records = [fixture(VALID[0]), {"userid": {"N": "1"}}, 42, fixture(VALID[1])]
    form, found = read(json.dumps(records, indent=2).encode())
    assert form == "JSON array of change records"
    assert isinstance(found[0][1], SourceRecord) and isinstance(found[3][1], SourceRecord)
    assert str(found[1][1]).startswith("JSON array of change records, [1] (line ")
    assert "an object with members userid" in str(found[1][1])
    assert "a JSON int" in str(found[2][1])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'[\n  {"eventID": "x",\n   "eventName": }\n]', r"JSON array, \[0\] \(line 2\): not valid "
         r"JSON at line 3, column 17"),
        (b'{\n  "eventID": "x"\n', r"JSON object, line 3: expected ','"),
        (b"[\n\xff]", r"JSON array, \[0\] \(line 2\): not valid JSON at line 2, column 1"),
        (b"[1, 2", r"line 1: expected ',' or ']' after \[1\] \(line 1\), found the end"),
        (b'{"Records": [{"kinesis": {}}] x', r"expected ','"),
        (b"[NaN]", r"not valid JSON .*NaN is not JSON"),
    ],
)  # fmt: skip
def test_broken_documents_stop_with_the_form_and_the_line(data: bytes, message: str) -> None:
    reader = InputReader(io.BytesIO(data))
    list(reader.located())
    assert isinstance(reader.stopped, InputError)
    assert re.search(message, str(reader.stopped)), str(reader.stopped)


def test_a_damaged_gzip_stream_stops_after_what_it_held() -> None:
    lines = [orjson.dumps(fixture(path)) for path in VALID]
    data = gzip.compress(b"\n".join(lines) + b"\n")
    reader = InputReader(io.BytesIO(data[: len(data) - 12]))  # the trailer and some data cut
    found = list(reader.located())
    assert 0 < len(found) < len(lines) + 1
    assert [r.data for _, r in found] == lines[: len(found)]
    assert reader.stopped is not None
    assert str(reader.stopped).startswith("gzip-compressed JSON Lines of change records, line ")
    assert "the gzip stream is damaged" in str(reader.stopped)
    reader = InputReader(io.BytesIO(b"\x1f\x8b not gzip at all"))
    assert list(reader.located()) == []
    assert "gzip-compressed input, line 1: the gzip stream is damaged" in str(reader.stopped)


def test_empty_input_has_no_records() -> None:
    assert read(b"") == ("empty input", [])
    assert read(b"\n  \n") == ("empty input", [])


def test_decode_reads_a_pretty_printed_record_as_one(capsys: pytest.CaptureFixture[str]) -> None:
    path = FIXTURES / "records" / "valid" / "kinesis-every-type.json"
    assert len(path.read_text().splitlines()) > 40
    assert main(["decode", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert len(out.splitlines()) == 1
    assert json.loads(out)["event_id"] == fixture(path)["eventID"]


def test_decode_names_the_form_and_position_of_a_bad_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = fixture(VALID[0])
    bad["eventName"] = "UPSERT"
    source = tmp_path / "records.json"
    source.write_text(json.dumps({"Records": [fixture(VALID[0]), bad]}, indent=2))
    assert main(["decode", str(source)]) == 1
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 1
    assert "object with a Records array of change records, Records[1] (line " in err
    assert "eventName must be INSERT, MODIFY or REMOVE" in err
    assert "1 record(s) failed" in err


def test_decode_export_items_with_export_time_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "export.json"
    source.write_bytes(export_line(5) + b"\n")
    args = ["decode", str(source), "--export-time", "2024-05-01T00:00:00Z", "--key", "userid"]
    assert main(args) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["approximate_creation_us"] == MAY_1_US - 5_000_000  # minus the skew margin
    assert record["keys"] == {"userid": 5}
    assert main(["decode", str(source), "--key", "userid"]) == 1
    assert "pass --export-time" in capsys.readouterr().err


@pytest.mark.parametrize("size", [1, 2, 5, 1000])
def test_batches_hold_what_located_gives_in_order(size: int) -> None:
    lines = b"\n".join(orjson.dumps(fixture(path)) for path in VALID) + b"\n\n"
    records = [fixture(VALID[0]), 42, fixture(VALID[1]), {"x": 1}, fixture(VALID[2])]
    for data in (lines, json.dumps(records, indent=2).encode()):
        located = list(InputReader(io.BytesIO(data)).located())
        batches = list(InputReader(io.BytesIO(data)).batches(size))
        assert all(len(records) <= size for records, _, _ in batches)
        assert [r for b in batches for r in b[0]] == [
            r for _, r in located if isinstance(r, SourceRecord)
        ]
        assert [w for b in batches for w in b[1]] == [
            w for w, r in located if isinstance(r, SourceRecord)
        ]
        errors = [str(e) for b in batches for e in b[2]]
        assert errors == [str(r) for _, r in located if isinstance(r, InputError)]


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 20])
def test_json_lines_batches_split_by_chunk_keep_every_line_and_its_number(chunk: int) -> None:
    # Lines passed on as they are (base64 ones, not parsed here): blank lines, CRLF,
    # whitespace and no final newline, across every chunk boundary.
    lines = [b"YQ==", b"", b"  Yg==\r", b"\t", b"Yw=="]
    lines += [b"eDE%dCg==" % i for i in range(20)] + [b"", b"eg== "]
    data = b"\n".join(lines)
    expected = [(n + 1, line.strip()) for n, line in enumerate(lines) if line.strip()]
    for size in (1, 3, 100):
        batches = list(InputReader(io.BytesIO(data), chunk=chunk).batches(size))
        got = [
            (w, r.data)
            for records, where, _ in batches
            for r, w in zip(records, where, strict=True)
        ]
        assert got == expected
        assert all(len(b[0]) == size for b in batches[:-1]) and 0 < len(batches[-1][0]) <= size
        assert all(type(r) is SourceRecord and r[1:] == (None,) * 4 for b in batches for r in b[0])


def test_json_lines_of_get_records_outputs_are_named_with_their_article() -> None:
    record = fixture(FIXTURES / "records" / "valid" / "streams-insert-s.json")
    record.pop("eventSourceARN", None)
    line = orjson.dumps({"Records": [record], "NextShardIterator": "arn:aws:dynamodb:..."})
    form, found = read(line + b"\n" + line, table="customers")
    assert form == "JSON Lines, each an aws dynamodbstreams get-records output"
    assert len(decoded(found)) == 2


@pytest.mark.parametrize(
    "first",
    [b'{"eventID": "x", "eventName": "INS\x00ERT"}', b'{"eventID": "x", "eventName": "INS'],
    ids=["not-json", "cut-short"],
)
def test_a_bad_first_line_is_json_lines_when_the_next_line_is_a_record(first: bytes) -> None:
    record = orjson.dumps(fixture(VALID[0]))
    form, found = read(first + b"\n\n" + record + b"\n")
    assert form == "JSON Lines of change records"
    assert [(where, r.data) for where, r in found] == [(1, first), (3, record)]


def test_a_record_on_the_line_after_a_records_opening_is_still_a_document() -> None:
    record = orjson.dumps(fixture(VALID[0]))
    form, found = read(b'{"Records": [\n' + record + b"\n]}\n")
    assert form == "object with a Records array of change records"
    assert [r.data for _, r in found] == [record]


def test_utf16_text_stops_at_once_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "records.json"  # as PowerShell's > writes it
    path.write_bytes(json.dumps([fixture(VALID[0])], indent=2).encode("utf-16"))
    assert main(["decode", str(path)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "ddbcdc decode: stopped: input, line 1: UTF-16 text (it starts with a byte order mark of "
        "UTF-16): ddbcdc reads UTF-8"
    ]
