"""A column added to a mapping is filled from the attributes the rows kept: through the
column's rules, bad values dead-lettered, in batches that resume after an interruption."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from evolution_support import US, Mappings, change, columns, migrate, shipped, write_items

from ddbcdc.decode.itemjson import decode_attributes
from ddbcdc.materialize.deadletters import list_dead_letters
from ddbcdc.migrate import run as migration
from ddbcdc.migrate.fill import BackfillReport
from ddbcdc.pipeline import Pipeline
from ddbcdc.schema.mapping import TableMapping
from ddbcdc.verify.compare import expected_rows, live_rows

ITEMS: dict[int, dict[str, Any]] = {
    1: {"first_name": "Ada", "city": "  Oslo ", "score": Decimal("9.50"), "pet": "cat"},
    2: {"first_name": "Alan", "city": 12, "score": "high"},  # score does not fit numeric
    3: {"first_name": "Grace"},  # neither attribute
    4: {"first_name": "Edsger", "city": "Porto", "score": 7},
    5: {"first_name": "Barbara", "score": {"a": 1}},
}


@pytest.fixture
def db(fresh_database: Callable[..., AbstractContextManager[str]]) -> Iterator[str]:
    with fresh_database("t_backfill") as url:
        yield url


@pytest.fixture
def engine(db: str) -> Iterator[sa.Engine]:
    eng = sa.create_engine(db)
    yield eng
    eng.dispose()


@pytest.fixture
def mappings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db: str) -> Mappings:
    return Mappings(tmp_path / "mappings", monkeypatch, db)


def evolved(**extra: Any) -> dict[str, Any]:
    doc = shipped()
    doc["columns"] += [
        {"name": "city", "type": "text", "rules": ["trim"]},
        {"name": "score", "type": "numeric"},
    ]
    doc.update(extra)
    return doc


def rows(engine: sa.Engine) -> dict[int, tuple[Any, ...]]:
    query = "SELECT userid, city, score, attributes::text FROM customers ORDER BY userid"
    with engine.connect() as conn:
        found = conn.execute(sa.text(query)).all()
    return {r[0]: (r[1], r[2], decode_attributes(r[3]) if r[3] else None) for r in found}


def loaded(engine: sa.Engine, mappings: Mappings) -> TableMapping:
    mapping = mappings.write(shipped())
    migration.upgrade(engine, [mapping])
    write_items(engine, mapping, ITEMS)
    return mapping


class StopBackfillError(Exception):
    pass


def test_new_columns_are_filled_from_the_kept_attributes_and_resume(
    engine: sa.Engine, mappings: Mappings, capsys: pytest.CaptureFixture[str]
) -> None:
    loaded(engine, mappings)
    new = mappings.write(evolved())
    batches: list[BackfillReport] = []

    def stop_after_two(report: BackfillReport) -> None:
        batches.append(report)
        if len(batches) == 2:
            raise StopBackfillError

    with pytest.raises(StopBackfillError):
        migration.migrate(engine, [new], batch_size=2, on_batch=stop_after_two)
    with engine.connect() as conn:
        job = conn.execute(sa.text("SELECT after_key, rows_done FROM ddbcdc_backfills")).one()
    assert job == ('{"userid":4}', 4)  # two batches committed, then the interruption
    assert rows(engine)[1][0] == "Oslo" and rows(engine)[5][1] is None

    assert migrate("--batch-size", "2") == 0  # resumes: the plan is done, the fill goes on
    out = capsys.readouterr().out
    assert "mapping version 2 (unchanged)" in out
    assert "backfilled customers (city, score): 1 rows, 0 filled, 1 dead letters; done" in out
    assert rows(engine) == {
        1: ("Oslo", Decimal("9.50"), {"pet": "cat"}),
        2: ("12", None, {"score": "high"}),  # N into text is exact; the bad score is kept
        3: (None, None, {}),
        4: ("Porto", Decimal(7), {}),
        5: (None, None, {"score": {"a": 1}}),
    }
    with engine.connect() as conn:
        letters = list_dead_letters(conn)
    assert [(x.stage, x.error_column, x.error_reason, x.error_path) for x in letters] == [
        ("backfill", "score", "S where numeric expected: not a number", "attributes.score"),
        ("backfill", "score", "M where numeric expected", "attributes.score"),
    ]
    assert all("high" not in x.error for x in letters)  # never the value
    # The rows now are what cleansing the items with the new mapping gives, but for the
    # values that did not fit.
    with engine.connect() as conn:
        live = live_rows(conn, new)
    fitting = {k: {"userid": k, **v} for k, v in ITEMS.items() if k not in (2, 5)}
    assert {k: live[(k,)] for k in fitting} == {
        (k,)[0]: row for (k,), row in expected_rows(iter(fitting.values()), new).items()
    }


def test_a_second_pass_changes_nothing(engine: sa.Engine, mappings: Mappings) -> None:
    loaded(engine, mappings)
    new = mappings.write(evolved())
    migration.migrate(engine, [new])
    first = rows(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE ddbcdc_backfills SET finished_at = NULL, after_key = NULL"))
    (report,) = migration.migrate(engine, [new]).backfills
    assert report.filled == 0 and report.dead_lettered == 2  # the same two, again
    assert rows(engine) == first
    with engine.connect() as conn:
        assert len(list_dead_letters(conn)) == 2  # not written twice


def test_a_row_written_with_the_new_mapping_is_left_as_it_is(
    engine: sa.Engine, mappings: Mappings
) -> None:
    """A writer with the new mapping wrote key 1 before the fill reached it; the fill does
    not overwrite it, and replaying the dead letter of key 2 after the item was fixed has
    nothing left to do."""
    loaded(engine, mappings)
    new = mappings.write(evolved())
    result = migration.migrate(engine, [new], batch_size=1, on_batch=lambda r: None)
    assert result.backfills[0].dead_lettered == 2
    pipeline = Pipeline(engine=engine, mappings=[new])
    fixed = {"first_name": "Alan", "city": "Kyoto", "score": 3}
    assert pipeline.process([change(2, fixed, us=US + 1)]).upserted == 1
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE ddbcdc_backfills SET finished_at = NULL, after_key = NULL"))
    migration.migrate(engine, [new])
    assert rows(engine)[2] == ("Kyoto", Decimal(3), {})

    from ddbcdc.commands.dlq import replay_dead_letters

    result_replay = replay_dead_letters(Pipeline(engine=engine, mappings=[new]), stage="backfill")
    assert result_replay.received == 2 and result_replay.dead_lettered == 1  # key 5 still bad
    with engine.connect() as conn:
        (left,) = list_dead_letters(conn)
    assert left.error_reason == "M where numeric expected"


def test_a_required_column_gets_its_default_and_not_null(
    engine: sa.Engine, mappings: Mappings
) -> None:
    loaded(engine, mappings)
    doc = shipped()
    city = {"name": "city", "type": "text", "rules": ["trim"], "required": True, "default": "?"}
    doc["columns"].append(city)
    result = migration.migrate(engine, [mappings.write(doc)])
    assert result.problems == []
    assert columns(engine)["city"] == ("TEXT", False)
    with engine.connect() as conn:
        cities = conn.execute(sa.text("SELECT userid, city FROM customers ORDER BY 1")).all()
    assert cities == [(1, "Oslo"), (2, "12"), (3, "?"), (4, "Porto"), (5, "?")]


def test_a_required_column_without_values_stays_nullable_until_settled(
    engine: sa.Engine, mappings: Mappings, capsys: pytest.CaptureFixture[str]
) -> None:
    loaded(engine, mappings)
    doc = shipped()
    doc["columns"].append({"name": "city", "type": "text", "required": True})
    mappings.write(doc)
    assert migrate() == 1
    out = capsys.readouterr().out
    assert "set not null customers city  (after the backfill)" in out
    assert "not finished: customers.city stays nullable" in out
    assert columns(engine)["city"] == ("TEXT", True)
    with engine.connect() as conn:
        reasons = [x.error_reason for x in list_dead_letters(conn)]
    assert reasons == ["required attribute is missing"] * 2  # keys 3 and 5


def test_with_the_whole_item_kept_a_column_can_take_a_mapped_attribute(
    engine: sa.Engine, mappings: Mappings
) -> None:
    doc = shipped() | {"extra": {"column": "attributes", "item_column": "item"}}
    mapping = mappings.write(doc)
    migration.upgrade(engine, [mapping])
    write_items(engine, mapping, {1: {"phone": 5550100}, 2: {"phone": "+1 555"}, 3: {}})
    doc["columns"].append({"name": "phone_number", "source": "phone", "type": "bigint"})
    result = migration.migrate(engine, [mappings.write(doc)])
    assert [p.source for p in result.plans] == ["item"]
    with engine.connect() as conn:
        found = conn.execute(sa.text("SELECT userid, phone, phone_number FROM customers")).all()
    assert sorted(found) == [(1, "5550100", 5550100), (2, "1555", None), (3, None, None)]
    with engine.connect() as conn:
        (letter,) = list_dead_letters(conn)
    assert (letter.error_column, letter.error_reason) == (
        "phone_number",
        "S where bigint expected: not an integer",
    )
