"""Type drift, visible: dead letters say which column refused what type, and are counted."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from evolution_support import Mappings, shipped

from change_records import record
from ddbcdc.cli import main
from ddbcdc.materialize.deadletters import DeadLetterCount, summarize_dead_letters
from ddbcdc.migrate.run import upgrade
from ddbcdc.pipeline import Pipeline, SourceRecord


@pytest.fixture
def db(fresh_database: Callable[..., AbstractContextManager[str]]) -> Iterator[str]:
    with fresh_database("t_drift") as url:
        yield url


def insert(userid: int, image: dict[str, Any], table: str = "customers") -> SourceRecord:
    data = record("INSERT", {"userid": userid}, 1, image=image, eid=uuid.uuid4().hex, table=table)
    return SourceRecord(data, shard_id="shardId-1", sequence_number=str(userid))


def test_drift_is_counted_per_table_column_and_reason(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = shipped()
    doc["columns"][3] = {"name": "phone", "type": "numeric"}
    doc["target_table"] = "people"
    mapping = Mappings(tmp_path / "m", monkeypatch, db).write(doc)
    engine = sa.create_engine(db)
    upgrade(engine, [mapping])
    records = [insert(i, {"phone": f"555-{i}"}) for i in range(1, 4)]  # S into numeric
    records += [
        insert(4, {"phone": True}),
        insert(5, {"phone": 5550100}),  # fits
        insert(6, {"phone": 1, "bad\x00name": 1}),  # an unmapped name jsonb cannot hold
        insert(7, {}, table="orders"),  # no mapping
        SourceRecord(b"{not json", shard_id="shardId-1", sequence_number="8"),
    ]
    result = Pipeline(engine=engine, mappings=[mapping]).process(records)
    assert result.upserted == 1 and result.dead_lettered == 7
    assert result.reasons[("people", "phone", "S where numeric expected: not a number")] == 3
    assert result.reasons[("people", "phone", "BOOL where numeric expected")] == 1
    with engine.connect() as conn:
        counts = summarize_dead_letters(conn)
    assert counts[0] == DeadLetterCount(
        "people", "phone", "S where numeric expected: not a number", "cleanse", 3
    )
    assert {(x.table, x.column, x.count) for x in counts[1:]} == {
        ("people", "phone", 1),
        ("people", "attributes", 1),
        ("orders", None, 1),
        (None, None, 1),
    }

    assert main(["dlq", "list", "--summary"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "people.phone: 3 records, S where numeric expected: not a number (cleanse)"
    assert "people.phone: 1 record, BOOL where numeric expected (cleanse)" in out
    assert out[-1] == "7 dead letter(s)"
    assert main(["dlq", "list", "--summary", "--stage", "decode"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "1 dead letter(s)"
    engine.dispose()
