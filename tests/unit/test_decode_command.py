"""``ddbcdc decode``: line in, JSON out, bad lines on stderr, exit code says if any failed."""

from __future__ import annotations

import base64
import io
import json
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from ddbcdc.cli import main
from ddbcdc.decode.render import record_to_json, to_jsonable

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SAMPLE = FIXTURES / "sample-records.jsonl"


def compact(name: str) -> bytes:
    path = FIXTURES / "records" / "valid" / f"{name}.json"
    return orjson.dumps(orjson.loads(path.read_bytes()))


def test_decodes_the_sample_records(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", str(SAMPLE)]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == len(SAMPLE.read_text().splitlines())
    first = json.loads(lines[0])
    assert first["event_name"] == "INSERT"
    assert first["table_name"] == "customers"
    assert isinstance(first["approximate_creation_us"], int)
    assert first["approximate_creation"].endswith("+00:00")
    assert err == ""


def test_bad_lines_are_reported_with_their_number_and_the_rest_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = compact("kinesis-modify-ms")
    source = tmp_path / "in.txt"
    source.write_bytes(
        b"\n".join([good, b"", b"not a record", base64.b64encode(good), b"   ", b"{}"]) + b"\n"
    )
    assert main(["decode", str(source)]) == 1
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 2
    assert "line 3:" in err
    assert "line 6:" in err
    assert "2 record(s) failed" in err
    assert "JSON Lines of change records, line 3:" in err
    assert "gX8fQ2n" not in err  # no item contents in error messages


def test_stdin_pretty_and_exact_values(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(compact("kinesis-every-type") + b"\n"))
    monkeypatch.setattr("sys.stdin", stdin)
    assert main(["decode", "--pretty", "-"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("{\n  ")
    image = json.loads(out)["new_image"]
    assert image["n_trailing_zeros"] == "123.4500"
    assert image["n_exponent"] == "1.10E+5"
    assert image["n_largest"] == "9.9999999999999999999999999999999999999E+125"
    assert image["n_38_digits"] == "12345678901234567890123456789012345678"  # > 64 bits
    assert image["n_int"] == 8
    assert base64.b64decode(image["b_all_bytes"]) == bytes(range(256))
    assert image["ns"] == [-3, "1E-130", 1, "2.50"]  # sorted by value
    assert image["ss"] == ["a", "b", "grüße"]


def test_timestamp_unit_override(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "in.txt"
    source.write_bytes(compact("kinesis-modify-ms") + b"\n")
    assert main(["decode", "--timestamp-unit", "us", str(source)]) == 0
    assert json.loads(capsys.readouterr().out)["approximate_creation_us"] == 1667565639982


def test_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", "/nonexistent/records.jsonl"]) == 2
    assert "No such file" in capsys.readouterr().err


def test_to_jsonable_rules() -> None:
    assert to_jsonable({"d": Decimal("1.10E+5"), "b": b"\xff", "s": {3, 1}}) == {
        "d": "1.10E+5",
        "b": "/w==",
        "s": [1, 3],
    }
    assert to_jsonable(2**64) == str(2**64)
    assert to_jsonable(-(2**63)) == -(2**63)
    with pytest.raises(TypeError):
        to_jsonable(object())


def test_record_to_json_refuses_what_json_cannot_hold() -> None:
    from ddbcdc import decode_record

    record = decode_record(orjson.loads(compact("kinesis-modify-ms")))
    broken = record.model_copy(update={"keys": {"k": "\ud800"}})
    with pytest.raises(TypeError):
        record_to_json(broken)


def test_times_past_year_9999_in_utc_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    late = "9999-12-31T23:59:59-05:00"  # a valid ISO time whose UTC is past datetime.max
    record = {
        "eventID": "1",
        "eventName": "INSERT",
        "eventSource": "aws:dynamodb",
        "dynamodb": {
            "ApproximateCreationDateTime": late,
            "Keys": {"id": {"S": "a"}},
            "SequenceNumber": "1",
        },
    }
    page = tmp_path / "page.json"
    page.write_text(json.dumps({"Records": [record]}))
    assert main(["decode", str(page)]) == 1
    assert "Records[0]: dynamodb.ApproximateCreationDateTime" in capsys.readouterr().err
    assert main(["decode", str(page), "--export-time", late]) == 2
    assert "--export-time: '9999-12-31T23:59:59-05:00' is out of range" in capsys.readouterr().err
