"""Dead letters: poison records are kept with all a replay needs; replay after a fix."""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from ddbcdc.commands import dlq
from ddbcdc.decode.attributes import marshal
from ddbcdc.materialize.deadletters import list_dead_letters
from ddbcdc.migrate.run import upgrade
from ddbcdc.pipeline import Pipeline, SourceRecord
from ddbcdc.schema.mapping import load_mappings

SHIPPED_DIR = Path(__file__).resolve().parents[2] / "schemas" / "tables"
SHIPPED = load_mappings(SHIPPED_DIR)
US = 1_700_000_000_000_000
ORDERS = {
    "source_table": "Orders",
    "target_table": "orders",
    "key": ["order_id"],
    "columns": [{"name": "order_id", "type": "text"}, {"name": "amount", "type": "numeric"}],
}


@pytest.fixture
def db(
    fresh_database: Callable[..., AbstractContextManager[str]], monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    with fresh_database("t_dlq") as url:
        monkeypatch.setenv("DATABASE_URL", url)
        yield url


def payload(table: str, keys: dict[str, Any], image: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {
            "awsRegion": "us-east-1",
            "eventID": uuid.uuid4().hex,
            "eventName": "INSERT",
            "tableName": table,
            "dynamodb": {
                "ApproximateCreationDateTime": US,
                "Keys": marshal(keys),
                "NewImage": marshal(image),
            },
            "eventSource": "aws:dynamodb",
        }
    )


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    dlq.register(parser.add_subparsers())
    args = parser.parse_args(["dlq", *argv])
    return int(args.func(args))


def test_poison_records_are_kept_and_replayed_after_a_mapping_fix(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = sa.create_engine(db)
    upgrade(engine, SHIPPED)
    good = payload("customers", {"userid": 1}, {"userid": 1, "first_name": "Ada"})
    garbage = b'{"eventName": "INSERT", \xff not json'
    wrong_type = payload("customers", {"userid": 2}, {"userid": 2, "first_name": 5 > 4})
    unmapped = payload("Orders", {"order_id": "A-1"}, {"order_id": "A-1", "amount": 12})
    records = [
        SourceRecord(good, "shardId-1", "101", "pk1"),
        SourceRecord(garbage, "shardId-1", "102", "pk2"),
        SourceRecord(wrong_type, "shardId-1", "103", "pk3"),
        SourceRecord(unmapped, "shardId-2", "104", "pk4"),
    ]
    result = Pipeline(engine=engine, mappings=SHIPPED).process(records)
    assert (result.received, result.upserted, result.dead_lettered) == (4, 1, 3)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT userid FROM customers")).scalars().all() == [1]
        letters = list_dead_letters(conn)
    assert [x.payload for x in letters] == [garbage, wrong_type, unmapped]  # exact bytes
    assert [x.stage for x in letters] == ["decode", "cleanse", "cleanse"]
    assert [(x.shard_id, x.sequence_number, x.partition_key) for x in letters] == [
        ("shardId-1", "102", "pk2"),
        ("shardId-1", "103", "pk3"),
        ("shardId-2", "104", "pk4"),
    ]
    assert letters[1].error_path == "dynamodb.NewImage.first_name"
    assert letters[1].source_table == "customers" and letters[1].target_table == "customers"
    assert "no table mapping for source table 'Orders'" in letters[2].error
    assert letters[2].error_path == "tableName"

    assert run(["list", "--json"]) == 0
    listed = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [base64.b64decode(x["payload"]) for x in listed] == [garbage, wrong_type, unmapped]
    assert run(["list", "--stage", "cleanse", "--table", "Orders"]) == 0
    out = capsys.readouterr().out
    assert "no table mapping" in out and "1 dead letter(s)" in out
    assert run(["list", "--limit", "2"]) == 0  # three pending: the count says some are left out
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4 and "102" in out[1] and "103" in out[2]
    assert out[-1] == "the oldest 2 dead letter(s) shown; more match (--limit, --summary)"
    assert run(["list", "--limit", "2", "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert run(["list", "--limit", "3"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "3 dead letter(s)"

    # The fix: a mapping for Orders. Migrate creates its table; replay applies its letter.
    shutil.copy(SHIPPED_DIR / "customers.json", tmp_path / "customers.json")
    (tmp_path / "orders.json").write_text(json.dumps(ORDERS))
    monkeypatch.setenv("DDBCDC_MAPPINGS_DIR", str(tmp_path))
    upgrade(engine, load_mappings(tmp_path))
    assert run(["replay"]) == 1  # two still fail
    assert "replayed 1 of 3" in capsys.readouterr().out
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT order_id, amount FROM orders")).one() == ("A-1", 12)
        pending = list_dead_letters(conn)
        everything = list_dead_letters(conn, include_replayed=True)
    assert [x.payload for x in pending] == [garbage, wrong_type]
    assert pending[1].error_path == "dynamodb.NewImage.first_name"
    replayed = [x for x in everything if x.replayed_at is not None]
    assert [x.payload for x in replayed] == [unmapped]
    assert run(["replay"]) == 1 and "replayed 0 of 2" in capsys.readouterr().out
    engine.dispose()


def test_single_mapping_takes_records_without_table_name(db: str) -> None:
    engine = sa.create_engine(db)
    upgrade(engine, SHIPPED)
    doc = orjson.loads(payload("customers", {"userid": 5}, {"userid": 5}))
    del doc["tableName"]
    result = Pipeline(engine=engine, mappings=SHIPPED).process([SourceRecord(orjson.dumps(doc))])
    assert (result.upserted, result.dead_lettered) == (1, 0)
    two = (*SHIPPED, *load_mappings_from(ORDERS))
    upgrade(engine, two)
    result = Pipeline(engine=engine, mappings=two).process([SourceRecord(orjson.dumps(doc))])
    assert result.dead_lettered == 1
    engine.dispose()


def load_mappings_from(doc: dict[str, Any]) -> list[Any]:
    from ddbcdc.schema.mapping import parse_mapping

    return [parse_mapping(doc, name="orders")]


def test_discard_gives_up_on_pending_dead_letters_and_keeps_them(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = sa.create_engine(db)
    upgrade(engine, SHIPPED)
    pipeline = Pipeline(engine=engine, mappings=SHIPPED)
    bad = [payload("customers", {"userid": n}, {"userid": n, "phone": True}) for n in (1, 2)]
    assert pipeline.process([SourceRecord(b) for b in bad]).dead_lettered == 2
    with engine.connect() as conn:
        first, second = (x.id for x in list_dead_letters(conn))
    assert run(["discard"]) == 2  # refuses to discard everything unnamed
    assert run(["discard", "--id", str(first), "--yes"]) == 0
    assert "discarded 1 dead letter(s)" in capsys.readouterr().out
    with engine.connect() as conn:
        assert [x.id for x in list_dead_letters(conn)] == [second]
        everything = list_dead_letters(conn, include_replayed=True)
    assert [(x.id, x.discarded_at is not None) for x in everything] == [
        (first, True),
        (second, False),
    ]
    assert run(["discard", "--id", str(first), "--yes"]) == 1  # already discarded
    assert run(["list", "--all"]) == 0 and "(discarded)" in capsys.readouterr().out
    pipeline.close()
