"""``ddbcdc mapping infer`` against a real moto DynamoDB server: mixed types, rare attributes."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ddbcdc.cli import main
from ddbcdc.local.stack import LocalStack
from ddbcdc.schema.infer import sample_items
from ddbcdc.schema.mapping import load_mapping


@pytest.fixture
def table(local_stack: LocalStack, emulator_client: Callable[[str, str], Any]) -> str:
    """A fresh table of 400 items: phone is N in 3 of 4 items and S in the rest, score an
    integer or a fraction, tags a set, prefs a map, nickname in 2 items only."""
    ddb = emulator_client("dynamodb", local_stack.dynamodb_endpoint)
    name = f"infer-{uuid.uuid4().hex[:8]}"
    ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "userid", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "userid", "AttributeType": "N"}],
        BillingMode="PAY_PER_REQUEST",
    )
    for i in range(400):
        item: dict[str, Any] = {
            "userid": {"N": str(i)},
            "firstName": {"S": f"n{i}"},
            "phone": {"S": f"555-{i:04d}"} if i % 4 == 0 else {"N": str(5550000 + i)},
            "score": {"N": f"{i}.5"} if i % 2 else {"N": str(i)},
            "active": {"BOOL": i % 3 == 0},
            "tags": {"SS": ["a", f"t{i}"]},
            "prefs": {"M": {"lang": {"S": "en"}}},
        }
        if i in (7, 8):
            item["nickname"] = {"S": "x"}
        ddb.put_item(TableName=name, Item=item)
    return name


def test_sample_is_a_parallel_scan_of_distinct_items(
    local_stack: LocalStack, emulator_client: Callable[[str, str], Any], table: str
) -> None:
    ddb = emulator_client("dynamodb", local_stack.dynamodb_endpoint)
    everything = sample_items(ddb, table, sample=1000, segments=3)
    assert sorted(int(x["userid"]["N"]) for x in everything) == list(range(400))
    some = sample_items(ddb, table, sample=150, segments=4)
    assert len(some) == 150 and len({x["userid"]["N"] for x in some}) == 150


def test_infer_writes_a_mapping_with_types_and_what_was_seen(
    local_stack: LocalStack,
    table: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in local_stack.env.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "customers.json"
    argv = ["mapping", "infer", "--table", table, "--sample", "10000", "--output", str(out)]
    assert main([*argv, "--target", "customers", "--min-share", "0.01"]) == 0
    doc = json.loads(out.read_text())
    assert doc["source_table"] == table and doc["key"] == ["userid"]
    types = {c["name"]: c["type"] for c in doc["columns"]}
    assert types == {
        "userid": "bigint",
        "first_name": "text",
        "phone": "text",  # S and N: text holds both
        "score": "numeric",
        "active": "boolean",
        "tags": "jsonb",
        "prefs": "jsonb",
    }
    inferred = doc["inferred"]
    assert inferred["sampled_items"] == 400
    assert inferred["mixed_types"] == ["phone", "score"]
    assert inferred["attributes"]["phone"]["types"] == {"N": 300, "S": 100}
    assert inferred["attributes"]["score"]["types"] == {"N.decimal": 200, "N": 200}
    assert inferred["left_to_extra"] == ["nickname"]
    assert "mixed types: phone (N 300, S 100)" in capsys.readouterr().err
    mapping = load_mapping(out)  # valid as written
    assert mapping.extra_column == "attributes"
    assert {c.name: c.source for c in mapping.columns}["first_name"] == "firstName"
