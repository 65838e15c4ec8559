"""schemas/change-record.schema.json agrees with the fixtures and with ddbcdc.decode.record."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from ddbcdc import DecodeError, decode_record

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
SCHEMA = json.loads((ROOT / "schemas" / "change-record.schema.json").read_text())
VALIDATOR = Draft202012Validator(SCHEMA)


def _records() -> list[tuple[str, Any]]:
    valid = (FIXTURES / "records" / "valid").glob("*.json")
    found = [(p.stem, json.loads(p.read_text())) for p in valid]
    kinesis = json.loads((FIXTURES / "lambda" / "kinesis-event.json").read_text())
    found += [
        (f"kinesis-event[{i}]", json.loads(base64.b64decode(r["kinesis"]["data"])))
        for i, r in enumerate(kinesis["Records"])
    ]
    streams = json.loads((FIXTURES / "lambda" / "dynamodb-event.json").read_text())
    found += [(f"dynamodb-event[{i}]", r) for i, r in enumerate(streams["Records"])]
    for number, line in enumerate((FIXTURES / "sample-records.jsonl").read_text().splitlines()):
        text = line if line.startswith("{") else base64.b64decode(line).decode()
        found.append((f"sample-records:{number + 1}", json.loads(text)))
    return sorted(found, key=lambda pair: pair[0])


def test_the_schema_is_a_valid_2020_12_schema() -> None:
    Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize(("name", "record"), _records(), ids=[n for n, _ in _records()])
def test_every_valid_fixture_matches_the_schema(name: str, record: Any) -> None:
    errors = [error.message for error in VALIDATOR.iter_errors(record)]
    assert errors == []
    decode_record(record)


@pytest.mark.parametrize(
    "path", sorted((FIXTURES / "records" / "invalid").glob("*.json")), ids=lambda p: p.stem
)
def test_invalid_fixtures_fail_the_schema_and_the_decoder(path: Path) -> None:
    record = json.loads(path.read_text())
    assert not VALIDATOR.is_valid(record)
    with pytest.raises(DecodeError):
        decode_record(record)


def test_sample_records_are_about_twenty_customers_changes_mixing_json_and_base64() -> None:
    lines = (FIXTURES / "sample-records.jsonl").read_text().splitlines()
    assert 15 <= len(lines) <= 30
    assert any(line.startswith("{") for line in lines)
    assert any(not line.startswith("{") for line in lines)
    for line in lines:
        record = decode_record(line)
        assert record.table_name == "customers"
        image = record.new_image or record.old_image
        assert image is not None
        assert set(image) == {"userid", "first_name", "last_name", "phone"}
