"""Synthesized backfill records, export manifests and lines, the read-rate cap: pure parts."""

from __future__ import annotations

import gzip
import hashlib
import io
from pathlib import Path

import orjson
import pytest

from ddbcdc.backfill.export import (
    ExportError,
    gzip_lines,
    open_location,
    parse_manifest,
    read_manifest,
)
from ddbcdc.backfill.importer import line_record
from ddbcdc.backfill.records import (
    RecordMaker,
    format_us,
    key_digest,
    key_from_json,
    key_to_json,
    parse_time_us,
)
from ddbcdc.backfill.scan import ReadLimiter
from ddbcdc.cleanse import Cleanser
from ddbcdc.decode.itemjson import decode_attributes
from ddbcdc.decode.record import decode_record
from ddbcdc.schema.mapping import load_mappings

(MAPPING,) = load_mappings(Path(__file__).resolve().parents[2] / "schemas" / "tables")
MAKER = RecordMaker(MAPPING, ["userid"])
ITEM = {
    "userid": {"N": "42"},
    "first_name": {"S": " Ada "},
    "phone": {"N": "5551234567"},
    "blob": {"B": b"\x00\xff"},
    "tags": {"BS": [b"a", b"b"]},
}


def test_a_put_decodes_and_cleanses_like_a_stream_insert_with_no_sequence() -> None:
    record = decode_record(
        MAKER.put(ITEM, version_us=1_700_000_000_000_001, event_id="snapshot:r:k").data,
        timestamp_unit="us",
    )
    assert record.event_name == "INSERT"
    assert record.approximate_creation_us == 1_700_000_000_000_001
    assert record.new_image is not None and record.new_image["blob"] == b"\x00\xff"
    assert record.new_image["tags"] == {b"a", b"b"}
    change = Cleanser(MAPPING).cleanse(record)
    assert change.version == (1_700_000_000_000_001, -1, "snapshot:r:k")  # -1: stream wins ties
    assert change.row is not None
    row = dict(change.row)
    kept = row.pop("attributes")  # what the mapping's columns do not name, kept losslessly
    assert row == {"userid": 42, "first_name": "Ada", "last_name": None, "phone": "5551234567"}
    assert decode_attributes(kept) == {"blob": b"\x00\xff", "tags": {b"a", b"b"}}


def test_a_remove_carries_only_the_keys() -> None:
    source = MAKER.remove({"userid": {"N": "7"}}, version_us=10**15, event_id="e", where="f:3")
    assert source.partition_key == "f:3"
    change = Cleanser(MAPPING).cleanse(decode_record(source.data, timestamp_unit="us"))
    assert change.event_name == "REMOVE" and change.key == (7,) and change.row is None


def test_keys_round_trip_through_json_and_digest_stably() -> None:
    key = {"pk": {"S": "a"}, "sk": {"B": b"\x01\x02"}}
    stored = orjson.loads(orjson.dumps(key_to_json(key)))
    assert key_from_json(stored) == key
    assert key_from_json(None) is None and key_to_json(None) is None
    assert key_digest(key) == key_digest(dict(reversed(key.items())))
    assert key_digest(key) != key_digest({"pk": {"S": "b"}, "sk": {"B": b"\x01\x02"}})


def test_times_parse_and_format_exactly() -> None:
    assert parse_time_us("2025-11-24T16:00:00.123Z") == 1_764_000_000_123_000
    assert parse_time_us("2025-11-24T17:00:00.123+01:00") == 1_764_000_000_123_000
    assert parse_time_us("2025-11-24T16:00:00.123") == 1_764_000_000_123_000
    assert parse_time_us("1764000000.5") == 1_764_000_000_500_000
    assert format_us(1_764_000_000_123_000) == "2025-11-24T16:00:00.123000Z"
    with pytest.raises(ValueError):
        parse_time_us("yesterday")


def test_manifests_parse_with_keys_relative_to_the_export_folder() -> None:
    summary = {
        "exportArn": "arn:aws:dynamodb:us-east-1:1:table/customers/export/0176-abc",
        "tableArn": "arn:aws:dynamodb:us-east-1:1:table/customers",
        "exportTime": "2025-11-24T16:00:00.123Z",
        "itemCount": 3,
        "outputFormat": "DYNAMODB_JSON",
        "exportType": "FULL_EXPORT",
    }
    files = (
        '{"itemCount":2,"md5Checksum":"x==","dataFileS3Key":"p/AWSDynamoDB/0176-abc/data/a.json.gz"}\n'
        '{"itemCount":1,"md5Checksum":"y==","dataFileS3Key":"elsewhere/data/b.json.gz"}\n'
    )
    manifest = parse_manifest(
        orjson.dumps(summary).decode(), files, root="p/AWSDynamoDB/0176-abc", folder="0176-abc"
    )
    assert manifest.export_id == "0176-abc" and manifest.table_name == "customers"
    assert manifest.export_time_us == 1_764_000_000_123_000 and not manifest.incremental
    assert [(f.key, f.item_count, f.md5) for f in manifest.files] == [
        ("data/a.json.gz", 2, "x=="),
        ("data/b.json.gz", 1, "y=="),
    ]
    with pytest.raises(ExportError, match=r"manifest-files.json line 1"):
        parse_manifest("{}", '{"itemCount": 1}\n', root="r", folder="f")
    with pytest.raises(ExportError, match=r"exportTime 'soon' is not a time"):
        parse_manifest('{"exportTime": "soon"}', "", root="r", folder="f")


def test_manifests_of_the_wrong_shape_or_encoding_are_named(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"^r/manifest-summary.json is not a JSON object$"):
        parse_manifest("[]", "", root="r", folder="f")
    with pytest.raises(ExportError, match=r"^r/manifest-summary.json: itemCount is not a count$"):
        parse_manifest('{"itemCount": "many"}', "", root="r", folder="f")
    (tmp_path / "manifest-summary.json").write_bytes(b'{"exportTime": "2025-11-24T16:00:00Z"}')
    (tmp_path / "manifest-files.json").write_bytes(b'{"dataFileS3Key": "data/\xff.json.gz"}\n')
    with pytest.raises(ExportError, match=r"manifest-files.json is not UTF-8 text \(invalid"):
        read_manifest(open_location(str(tmp_path)))


def test_export_lines_become_records_and_bad_lines_pass_through_as_they_are() -> None:
    full = orjson.dumps({"Item": {"userid": {"N": "1"}, "first_name": {"S": "x"}}})
    record = decode_record(
        line_record(full, maker=MAKER, version_us=5 * 10**14, event_id="e:0", where="f:1").data,
        timestamp_unit="us",
    )
    assert record.event_name == "INSERT" and record.approximate_creation_us == 5 * 10**14
    gone = orjson.dumps(
        {
            "Metadata": {"WriteTimestampMicros": {"N": "600000000000001"}},
            "Keys": {"userid": {"N": "1"}},
        }
    )
    record = decode_record(
        line_record(gone, maker=MAKER, version_us=None, event_id="e:1", where="f:2").data,
        timestamp_unit="us",
    )
    assert record.event_name == "REMOVE" and record.approximate_creation_us == 600000000000001
    for bad in (b"not json", b'{"Items": {}}', b'{"Metadata": {}}'):
        source = line_record(bad, maker=MAKER, version_us=None, event_id="e", where="f:9")
        assert source.data == bad and source.partition_key == "f:9"


def test_gzip_lines_stream_every_member_across_chunks_and_refuse_a_truncated_file() -> None:
    pad = [hashlib.md5(str(n).encode()).hexdigest().encode() for n in range(30_000)]
    lines = [b'{"Item":{"userid":{"N":"%d"},"pad":{"S":"%s"}}}' % (n, p) for n, p in enumerate(pad)]
    text = b"\n".join(lines[:20_000]) + b"\n\n  \n"
    packed = gzip.compress(text) + gzip.compress(b"\n".join(lines[20_000:]))  # two members
    assert len(packed) > 3 * (1 << 16)  # lines cross the chunks inflated at a time
    assert list(gzip_lines(io.BytesIO(packed))) == lines
    with pytest.raises(ExportError, match="not a complete gzip file"):
        list(gzip_lines(io.BytesIO(packed[: len(packed) // 2])))
    with pytest.raises(ExportError, match="not a complete gzip file"):
        list(gzip_lines(io.BytesIO(b"plain text, not gzip")))


def test_the_read_cap_sleeps_off_what_pages_cost() -> None:
    slept: list[float] = []
    limiter = ReadLimiter(max_rcu=100.0, sleep=slept.append)
    limiter.spend(items=500, consumed=50.0)  # within the burst of one second
    limiter.spend(items=500, consumed=250.0)  # 200 units of debt at 100/s: ~2 s
    assert slept and 1.9 < sum(slept) < 2.1
    by_items = ReadLimiter(max_items_per_second=10.0, sleep=slept.append)
    slept.clear()
    by_items.spend(items=40, consumed=0.0)
    assert 2.9 < sum(slept) < 3.1
    ReadLimiter(sleep=slept.append).spend(items=10**6, consumed=10**6)  # no cap: no wait
    with pytest.raises(ValueError):
        ReadLimiter(max_rcu=1.0, max_items_per_second=1.0)


def test_an_item_line_reuses_its_own_text_and_decodes_as_a_put_would() -> None:
    item = {"userid": {"N": "3"}, "first_name": {"S": 'q"uote\\'}, "b": {"B": "AP8="}}
    line = orjson.dumps({"Item": item})
    fast = line_record(line, maker=MAKER, version_us=10**15, event_id='x"y', where="f:1")
    slow = MAKER.put(item, version_us=10**15, event_id='x"y', where="f:1")
    assert fast.data.endswith(b',"NewImage":' + line[len(b'{"Item":') : -1] + b"}}")
    assert decode_record(fast.data, timestamp_unit="us") == decode_record(
        slow.data, timestamp_unit="us"
    )
    # Two "Item" members: not the plain shape, so the parsed item is written out again.
    odd = b'{"Item":{"userid":{"N":"1"}},"Item":{"userid":{"N":"2"}}}'
    record = decode_record(
        line_record(odd, maker=MAKER, version_us=10**15, event_id="e", where="f:2").data,
        timestamp_unit="us",
    )
    assert record.keys == {"userid": 2} and record.new_image == {"userid": 2}
