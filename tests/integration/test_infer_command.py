"""``ddbcdc mapping infer`` against a real moto DynamoDB server: mixed types, rare attributes;
a single-table design, whose routes ``migrate`` and ``apply`` then fill."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from ddbcdc.cli import main
from ddbcdc.decode.attributes import marshal
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


def test_a_single_table_design_gets_a_route_per_entity_that_migrate_and_apply_fill(
    local_stack: LocalStack,
    emulator_client: Callable[[str, str], Any],
    fresh_database: Callable[..., AbstractContextManager[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """From a sample to a table per entity through the commands: ``mapping infer`` proposes
    the routes, ``migrate`` creates their tables, ``apply`` fills each with its entity."""
    ddb = emulator_client("dynamodb", local_stack.dynamodb_endpoint)
    name = f"shop-{uuid.uuid4().hex[:8]}"
    ddb.create_table(
        TableName=name,
        KeySchema=[
            {"AttributeName": "PK", "KeyType": "HASH"},
            {"AttributeName": "SK", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "PK", "AttributeType": "S"},
            {"AttributeName": "SK", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    items: list[dict[str, Any]] = []
    for c in range(1, 31):
        items.append({"PK": f"CUSTOMER#{c}", "SK": "PROFILE", "_et": "customer", "name": "n"})
        for o, entity in enumerate(("order", "cart")):
            order = c * 10 + o
            sk = f"ORDER#2024-05-0{o + 1}#{order}"
            items.append({"PK": f"CUSTOMER#{c}", "SK": sk, "_et": entity, "total": c})
            items.append({"PK": f"ORDER#{order}", "SK": "LINE#1", "_et": "line", "sku": "x"})
    items.append({"PK": "NOTE#abc", "SK": "NOTE", "_et": "note", "text": "rare"})
    for item in items:
        ddb.put_item(TableName=name, Item=marshal(item))
    for key, value in local_stack.env.items():
        monkeypatch.setenv(key, value)
    folder = tmp_path / "mappings"
    folder.mkdir()
    out = folder / "shop.json"
    argv = ["mapping", "infer", "--table", name, "--sample", "1000", "--output", str(out)]
    assert main(argv) == 0
    mapping = load_mapping(out)
    prefix = name.replace("-", "_")  # the routes are named after the table
    expected = {f"{prefix}_{e}": 30 for e in ("customer", "order", "cart")}
    expected |= {f"{prefix}_line": 60, f"{prefix}_unmatched": 1}
    assert set(mapping.targets) == set(expected)
    records = folder.parent / "items.jsonl"
    records.write_bytes(
        b"".join(
            orjson.dumps(
                {
                    "eventID": f"e{n}",
                    "eventName": "INSERT",
                    "tableName": name,
                    "dynamodb": {
                        "ApproximateCreationDateTime": 1_700_000_000_000_000 + n,
                        "Keys": marshal({"PK": i["PK"], "SK": i["SK"]}),
                        "NewImage": marshal(i),
                    },
                }
            )
            + b"\n"
            for n, i in enumerate(items)
        )
    )
    with fresh_database("t_infer_routes") as url:
        monkeypatch.setenv("DATABASE_URL", url)
        monkeypatch.setenv("DDBCDC_MAPPINGS_DIR", str(folder))
        assert main(["migrate"]) == 0
        assert main(["apply", str(records)]) == 0
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            found = {
                t: conn.execute(sa.select(sa.func.count()).select_from(sa.table(t))).scalar()
                for t in expected
            }
        engine.dispose()
    assert found == expected
