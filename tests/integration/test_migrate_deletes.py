"""``ddbcdc migrate`` changes a mapping's delete modes: the column, and the rows of deleted
items the table keeps, as if the new modes had applied all along (docs/mappings.md)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from evolution_support import US, Mappings, columns, migrate, shipped

from change_records import record
from ddbcdc.pipeline import Pipeline, SourceRecord
from ddbcdc.schema.mapping import TableMapping, mapping_digest, parse_mapping


@pytest.fixture
def engine(fresh_database: Callable[..., AbstractContextManager[str]]) -> Iterator[sa.Engine]:
    with fresh_database("t_migrate_deletes") as url:
        eng = sa.create_engine(url)
        yield eng
        eng.dispose()


@pytest.fixture
def mappings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: sa.Engine) -> Mappings:
    url = engine.url.render_as_string(hide_password=False)
    return Mappings(tmp_path / "mappings", monkeypatch, url)


def modes(deletes: str, ttl_deletes: str) -> dict[str, Any]:
    doc = shipped()
    doc.update(deletes=deletes, ttl_deletes=ttl_deletes)
    return doc


def history(engine: sa.Engine, mapping: TableMapping) -> None:
    """Items 1..4; 2 removed by a user, 3 expired by the TTL, 4 expired and back."""
    records = [
        record("INSERT", {"userid": k}, US + k, image={"first_name": f"n{k}"}, eid=f"i{k}")
        for k in (1, 2, 3, 4)
    ]
    for k, ttl in ((2, False), (3, True), (4, True)):
        old = {"first_name": f"n{k}"}
        records.append(
            record("REMOVE", {"userid": k}, US + 10 + k, eid=f"r{k}", old_image=old, ttl=ttl)
        )
    records.append(record("INSERT", {"userid": 4}, US + 20, image={"first_name": "back"}, eid="b4"))
    pipeline = Pipeline(engine=engine, mappings=[mapping])
    assert pipeline.process([SourceRecord(r) for r in records]).dead_lettered == 0


def rows(engine: sa.Engine) -> dict[int, bool]:
    """userid -> whether the row is marked deleted."""
    marked = (
        "_ddbcdc_deleted_at IS NOT NULL" if "_ddbcdc_deleted_at" in columns(engine) else "false"
    )
    with engine.connect() as conn:
        query = sa.text(f"SELECT userid, {marked} FROM customers ORDER BY userid")
        return dict(conn.execute(query).all())


def test_hard_to_soft_adds_the_column_and_keeps_nothing_that_is_gone(
    engine: sa.Engine, mappings: Mappings, capsys: pytest.CaptureFixture[str]
) -> None:
    mapping = mappings.write(shipped())
    assert migrate() == 0
    history(engine, mapping)
    mappings.write(modes("soft", "delete"))
    capsys.readouterr()
    assert migrate("--dry-run") == 0
    out = capsys.readouterr().out.splitlines()
    assert "  add column customers _ddbcdc_deleted_at TIMESTAMPTZ (soft deletes)" in out
    assert (
        "    ALTER TABLE customers ADD COLUMN _ddbcdc_deleted_at TIMESTAMP WITH TIME ZONE;" in out
    )
    assert not [line for line in out if "destructive" in line]
    assert migrate() == 0
    assert rows(engine) == {1: False, 4: False}


@pytest.mark.parametrize(
    ("old", "new", "sql", "left"),
    [
        (
            ("soft", "delete"),
            ("hard", "delete"),
            "DELETE FROM customers WHERE customers._ddbcdc_deleted_at IS NOT NULL",
            {1: False, 4: False},
        ),
        (
            ("hard", "keep"),
            ("hard", "delete"),
            "DELETE FROM customers WHERE NOT (EXISTS (SELECT * FROM ddbcdc_versions__customers "
            "WHERE ddbcdc_versions__customers.userid = customers.userid "
            "AND NOT ddbcdc_versions__customers._ddbcdc_deleted))",
            {1: False, 4: False},
        ),
        (
            ("hard", "soft"),
            ("hard", "keep"),
            "UPDATE customers SET _ddbcdc_deleted_at=NULL "
            "WHERE customers._ddbcdc_deleted_at IS NOT NULL",
            {1: False, 3: False, 4: False},
        ),
    ],
    ids=["soft to hard", "keep to delete", "soft to keep"],
)
def test_rows_of_deleted_items_go_only_when_allowed_and_the_plan_shows_how(
    engine: sa.Engine,
    mappings: Mappings,
    capsys: pytest.CaptureFixture[str],
    old: tuple[str, str],
    new: tuple[str, str],
    sql: str,
    left: dict[int, bool],
) -> None:
    mappings.write(modes(*old))
    assert migrate() == 0
    history(engine, mappings.write(modes(*old)))
    before = rows(engine)
    mappings.write(modes(*new))
    capsys.readouterr()
    assert migrate() == 2
    err = capsys.readouterr().err
    assert "refusing destructive changes" in err and f"    {sql};" in err.splitlines(), err
    assert rows(engine) == before
    assert migrate("--allow-destructive") == 0
    assert rows(engine) == left
    has_mark = "_ddbcdc_deleted_at" in columns(engine)
    assert has_mark == ("soft" in new)
    assert migrate() == 0  # done: the table is what the mapping says


def test_a_change_with_no_row_to_lose_runs_without_being_allowed(
    engine: sa.Engine, mappings: Mappings
) -> None:
    mappings.write(modes("soft", "delete"))
    assert migrate() == 0
    mappings.write(modes("hard", "delete"))
    assert migrate() == 0
    assert "_ddbcdc_deleted_at" not in columns(engine)


@pytest.mark.parametrize(
    ("old", "new", "says"),
    [
        (("soft", "soft"), ("hard", "keep"), "do not record whether a user or DynamoDB's TTL"),
        (("hard", "keep"), ("hard", "soft"), "have no deletion time to mark them with"),
    ],
    ids=["marks of both causes", "kept rows to soft"],
)
def test_a_change_the_rows_cannot_follow_is_refused(
    engine: sa.Engine,
    mappings: Mappings,
    capsys: pytest.CaptureFixture[str],
    old: tuple[str, str],
    new: tuple[str, str],
    says: str,
) -> None:
    mappings.write(modes(*old))
    assert migrate() == 0
    history(engine, mappings.write(modes(*old)))
    mappings.write(modes(*new))
    capsys.readouterr()
    assert migrate("--allow-destructive") == 2
    assert says in capsys.readouterr().err


def test_the_digest_of_a_mapping_without_the_modes_is_unchanged() -> None:
    doc = shipped()
    plain = parse_mapping(doc, name="customers")
    spelled = parse_mapping({**doc, "deletes": "hard", "ttl_deletes": "delete"}, name="customers")
    assert mapping_digest(plain) == mapping_digest(spelled)
    assert mapping_digest(plain) != mapping_digest(parse_mapping(modes("soft", "delete"), name="c"))
