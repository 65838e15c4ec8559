"""``ddbcdc apply`` on every input form, into a real PostgreSQL: exports, events, get-records."""

from __future__ import annotations

import argparse
import base64
import gzip
import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from ddbcdc.commands import apply
from ddbcdc.decode.attributes import marshal
from ddbcdc.inputs.reader import MAX_FIRST_LINE
from ddbcdc.schema.mapping import load_mappings

SHIPPED_DIR = Path(__file__).resolve().parents[2] / "schemas" / "tables"
EXPORT_US = 1_714_521_600_000_000  # 2024-05-01T00:00:00Z
MARGIN_US = 5_000_000  # the default DDBCDC_CLOCK_SKEW_MARGIN


@pytest.fixture
def db(
    fresh_database: Callable[..., AbstractContextManager[str]], monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    with fresh_database("t_inputs", mappings=tuple(load_mappings(SHIPPED_DIR))) as url:
        monkeypatch.setenv("DATABASE_URL", url)
        monkeypatch.setenv("DDBCDC_MAPPINGS_DIR", str(SHIPPED_DIR))
        yield url


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    apply.register(parser.add_subparsers())
    args = parser.parse_args(["apply", *argv])
    return int(args.func(args))


def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(sa.text(sql)).all()]
    engine.dispose()
    return rows


def customers(url: str) -> list[tuple[Any, ...]]:
    return query(url, "SELECT userid, first_name, _ddbcdc_version_us FROM customers ORDER BY 1")


def change(event: str, userid: int, us: int, name: str | None = None) -> dict[str, Any]:
    dynamodb: dict[str, Any] = {
        "ApproximateCreationDateTime": us,
        "Keys": marshal({"userid": userid}),
    }
    if event != "REMOVE":
        dynamodb["NewImage"] = marshal({"userid": userid, "first_name": name})
    return {
        "eventID": f"{event}-{userid}-{us}",
        "eventName": event,
        "tableName": "customers",
        "eventSource": "aws:dynamodb",
        "dynamodb": dynamodb,
    }


def test_full_export_then_incremental_export_then_a_late_stale_change(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    items = [marshal({"userid": i, "first_name": f"n{i}"}) for i in (1, 2, 3)]
    export = tmp_path / "export.json.gz"
    export.write_bytes(gzip.compress(b"\n".join(orjson.dumps({"Item": i}) for i in items)))
    assert run(str(export), "--json") == 1  # no --export-time: every line refused
    err = capsys.readouterr().err
    assert "gzip-compressed JSON Lines of DynamoDB export items, line 1:" in err
    assert "pass --export-time" in err
    assert customers(db) == []

    assert run(str(export), "--export-time", "2024-05-01T00:00:00Z", "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["form"] == "gzip-compressed JSON Lines of DynamoDB export items"
    assert summary["upserted"] == 3
    assert customers(db) == [(i, f"n{i}", EXPORT_US - MARGIN_US) for i in (1, 2, 3)]

    def line(userid: int, us: int, new: str | None, old: str | None) -> bytes:
        keys = marshal({"userid": userid})
        record: dict[str, Any] = {
            "Metadata": {"WriteTimestampMicros": {"N": str(us)}},
            "Keys": keys,
        }
        if new is not None:
            record["NewImage"] = marshal({"userid": userid, "first_name": new})
        if old is not None:
            record["OldImage"] = marshal({"userid": userid, "first_name": old})
        return orjson.dumps(record)

    incremental = tmp_path / "incremental.json"
    incremental.write_bytes(
        b"\n".join(
            [
                line(1, EXPORT_US + 10, "changed", "n1"),  # MODIFY
                line(2, EXPORT_US + 20, None, "n2"),  # REMOVE
                line(3, EXPORT_US - 2 * MARGIN_US, "older", "n3"),  # before the export: stale
                line(4, EXPORT_US + 30, "new", None),  # INSERT
            ]
        )
    )
    assert run(str(incremental), "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["upserted"], summary["deleted"], summary["stale"]) == (2, 1, 1)
    assert customers(db) == [
        (1, "changed", EXPORT_US + 10),
        (3, "n3", EXPORT_US - MARGIN_US),
        (4, "new", EXPORT_US + 30),
    ]
    # the same full export again is older than what the incremental export left
    assert run(str(export), "--export-time", str(EXPORT_US // 1_000_000), "--json") == 0
    again = json.loads(capsys.readouterr().out)
    # 1 is newer, 2 is gone (its tombstone is newer); 3 is the same change again (the same
    # event id, hence the same version): nothing to write
    assert (again["stale"], again["upserted"]) == (3, 0)
    assert customers(db)[0] == (1, "changed", EXPORT_US + 10)


def test_export_items_are_versioned_as_the_importer_versions_them(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The export's clock and the stream's are different clocks: a change stamped a second
    before the export time may have been made after the export, and must win over it."""
    after = tmp_path / "after.jsonl"
    after.write_bytes(orjson.dumps(change("MODIFY", 7, EXPORT_US - 1_000_000, "after")))
    assert run(str(after)) == 0
    capsys.readouterr()
    export = tmp_path / "export.json"
    items = [marshal({"userid": i, "first_name": "exported"}) for i in (7, 8)]
    export.write_bytes(b"\n".join(orjson.dumps({"Item": i}) for i in items))
    assert run(str(export), "--export-time", "2024-05-01T00:00:00Z", "--json") == 0
    assert json.loads(capsys.readouterr().out)["stale"] == 1
    assert customers(db) == [
        (7, "after", EXPORT_US - 1_000_000),
        (8, "exported", EXPORT_US - MARGIN_US),  # what snapshot --from-export gives it
    ]
    monkeypatch.setenv("DDBCDC_CLOCK_SKEW_MARGIN", "PT60S")  # the same setting as the importer's
    assert run(str(export), "--export-time", str(EXPORT_US // 1_000_000 + 120), "--json") == 0
    assert customers(db)[1] == (8, "exported", EXPORT_US + 60_000_000)


def test_a_lambda_event_with_a_poison_record_names_its_position(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = change("INSERT", 10, EXPORT_US, "ok")
    bad = change("INSERT", 11, EXPORT_US, "bad")
    bad["dynamodb"]["NewImage"]["userid"] = {"N": "not a number"}
    event = {
        "Records": [
            {
                "kinesis": {
                    "partitionKey": f"pk{i}",
                    "sequenceNumber": f"4959{i:04d}",
                    "data": base64.b64encode(orjson.dumps(record)).decode(),
                },
                "eventSource": "aws:kinesis",
                "eventName": "aws:kinesis:record",
                "eventID": f"shardId-000000000001:4959{i:04d}",
            }
            for i, record in enumerate([good, bad])
        ]
    }
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event, indent=2))
    assert run(str(path)) == 1
    captured = capsys.readouterr()
    assert "Lambda event (Kinesis): received 2, upserted 1" in captured.out
    assert "dead-lettered (decode): Lambda event (Kinesis), Records[1] (line " in captured.err
    assert customers(db) == [(10, "ok", EXPORT_US)]
    letters = query(db, "SELECT shard_id, sequence_number, partition_key FROM ddbcdc_dead_letters")
    assert letters == [("shardId-000000000001", "49590001", "pk1")]


def get_records_output(names: list[str], us: int) -> str:
    records = [
        {
            "SequenceNumber": f"{i + 1:056d}",
            "Data": base64.b64encode(orjson.dumps(change("INSERT", i, us, name))).decode(),
            "PartitionKey": str(i),
        }
        for i, name in enumerate(names)
    ]
    return json.dumps({"Records": records, "NextShardIterator": "x"}, indent=4)


def test_get_records_output_and_a_broken_tail(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "get-records.json"
    path.write_text(get_records_output([f"g{i}" for i in range(5)], EXPORT_US))
    assert run(str(path), "--batch-size", "2", "--json") == 0
    assert json.loads(capsys.readouterr().out)["form"] == "aws kinesis get-records output"
    assert [r[1] for r in customers(db)] == ["g0", "g1", "g2", "g3", "g4"]

    text = get_records_output([f"h{i}" for i in range(5)], EXPORT_US + 1)
    path.write_text(text[: text.index('"PartitionKey": "3"')])  # the fourth record is cut
    assert run(str(path), "--batch-size", "2") == 1
    captured = capsys.readouterr()
    assert "received 3, upserted 3" in captured.out  # every record before the break
    assert "stopped: aws kinesis get-records output, Records[3] (line " in captured.err
    assert [r[1] for r in customers(db)] == ["h0", "h1", "h2", "g3", "g4"]


def test_a_first_line_too_long_to_look_for_is_read_whole_as_a_document(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    long_name = "x" * MAX_FIRST_LINE  # a record longer than the first line looked for
    path = tmp_path / "long.jsonl"
    lines = [change("INSERT", 1, EXPORT_US, long_name), change("INSERT", 2, EXPORT_US, "short")]
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    assert run(str(path)) == 0
    assert "received 2, upserted 2" in capsys.readouterr().out
    assert query(db, "SELECT userid, length(first_name) FROM customers ORDER BY 1") == [
        (1, MAX_FIRST_LINE),
        (2, 5),
    ]


def test_a_record_not_utf8_in_an_array_is_dead_lettered_as_it_is_and_the_rest_applied(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second, third = (
        orjson.dumps(change("INSERT", i, EXPORT_US, f"n{i}")) for i in (1, 2, 3)
    )
    second = second.replace(b'"n2"', b'"n\xff2"')  # not UTF-8, inside a string
    wide = orjson.loads(third)
    wide["SizeBytes"] = 10**30  # more than orjson writes back; tableName is added to it
    del wide["tableName"]
    path = tmp_path / "array.json"
    path.write_bytes(b"[\n" + first + b",\n" + second + b",\n" + json.dumps(wide).encode() + b"\n]")
    assert run(str(path)) == 1
    captured = capsys.readouterr()
    assert "JSON array of change records: received 3, upserted 2" in captured.out
    assert "dead-lettered (decode): JSON array of change records, [1] (line 3): " in captured.err
    assert "stopped" not in captured.err
    assert [r[:2] for r in customers(db)] == [(1, "n1"), (3, "n3")]
    assert query(db, "SELECT payload FROM ddbcdc_dead_letters") == [(second,)]


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_a_bad_first_line_of_json_lines_is_dead_lettered_and_the_rest_applied(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], compress: bool
) -> None:
    lines = [orjson.dumps(change("INSERT", i, EXPORT_US, f"n{i}")) for i in (1, 2, 3)]
    lines[0] = lines[0].replace(b"INSERT", b"INS\x00ERT")  # a control character: not JSON
    data = b"\n".join(lines) + b"\n"
    path = tmp_path / "changes.jsonl"
    path.write_bytes(gzip.compress(data) if compress else data)
    assert run(str(path)) == 1
    captured = capsys.readouterr()
    assert "JSON Lines of change records: received 3, upserted 2" in captured.out
    assert "JSON Lines of change records, line 1: payload is not valid JSON" in captured.err
    assert [r[:2] for r in customers(db)] == [(2, "n2"), (3, "n3")]
    assert query(db, "SELECT payload FROM ddbcdc_dead_letters") == [(lines[0],)]


def test_a_dead_letter_of_a_file_keeps_the_file_and_where_in_it(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ddbcdc.cli import main

    good, bad = change("INSERT", 1, EXPORT_US, "ok"), change("INSERT", 2, EXPORT_US, "bad")
    bad["dynamodb"]["NewImage"]["userid"] = {"N": "not a number"}
    lines = tmp_path / "changes.jsonl"
    lines.write_bytes(orjson.dumps(good) + b"\n\n" + orjson.dumps(bad) + b"\n")
    array = tmp_path / "changes.json"
    array.write_text(json.dumps([good, bad], indent=2))
    assert run(str(lines), "--batch-size", "1") == 1
    assert run(str(array)) == 1
    capsys.readouterr()
    assert main(["dlq", "list", "--json"]) == 0
    listed = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    opens = array.read_text().splitlines().index("  {", 2) + 1  # the line the second opens
    expected = [f"{lines}, line 3", f"{array}, [1] (line {opens})"]
    assert [x["source_position"] for x in listed] == expected
    assert main(["dlq", "list"]) == 0
    assert f"  {lines}, line 3  " in capsys.readouterr().out
