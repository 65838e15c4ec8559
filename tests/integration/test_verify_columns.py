"""Verify finds a difference in every stored column of every type: each mapped column (every
column type), the kept columns (unmapped attributes, the whole item) and the key, changed or
set to NULL in one PostgreSQL row. Through ``ddbcdc verify`` (the command) and
:func:`ddbcdc.verify.compare.compare` (the in-memory comparison), against moto and a real
PostgreSQL that no stream feeds."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest
import sqlalchemy as sa

from backfill_support import BackfillTable, backfill_table
from ddbcdc.cli import main
from ddbcdc.local.stack import LocalStack
from ddbcdc.schema.tables import mapped_tables
from ddbcdc.verify.compare import compare

COLUMNS = [
    {"name": "userid", "type": "bigint", "required": True},
    {"name": "small", "type": "smallint"},
    {"name": "mid", "type": "integer"},
    {"name": "big", "type": "bigint"},
    {"name": "amount", "type": "numeric"},
    {"name": "flag", "type": "boolean"},
    {"name": "blob", "type": "bytea"},
    {"name": "doc", "type": "jsonb"},
    {"name": "at", "type": "timestamptz"},
    {"name": "note", "type": "text"},
]
KEPT = {"column": "rest", "item_column": "item"}
#: column -> an UPDATE expression that changes its value (to another of its type).
CHANGED = {
    "small": "small + 1",
    "mid": "mid + 1",
    "big": "big + 1",
    "amount": "amount + 0.000001",
    "flag": "NOT flag",
    "blob": "blob || '\\x00'::bytea",
    "doc": """doc || '{"drift": 1}'::jsonb""",
    "at": "at + interval '1 microsecond'",
    "note": "note || ' '",
    "rest": """rest || '{"drift": 1}'::jsonb""",
    "item": """item || '{"drift": 1}'::jsonb""",
}
DRIFTED = 2  # the userid of the row drift is planted in


def item(userid: int) -> dict[str, Any]:
    return {
        "userid": {"N": str(userid)},
        "small": {"N": str(userid)},
        "mid": {"N": str(70_000 + userid)},
        "big": {"N": str(2**40 + userid)},
        "amount": {"N": f"{userid}.25"},
        "flag": {"BOOL": userid % 2 == 0},
        "blob": {"B": bytes([userid, 0, 255])},
        "doc": {"M": {"tags": {"SS": ["a", "b"]}, "n": {"N": "1.5"}}},
        "at": {"S": f"2024-02-29T12:00:0{userid}.123456+00:00"},
        "note": {"S": f"note {userid}"},
        "city": {"S": "Paris"},  # mapped by no column: kept in rest (and item)
    }


@pytest.fixture(scope="module")
def table(
    local_stack: LocalStack,
    fresh_database: Callable[..., AbstractContextManager[str]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[BackfillTable]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        tmp = tmp_path_factory.mktemp("verify_columns")
        with backfill_table(
            local_stack,
            fresh_database,
            tmp,
            columns=COLUMNS,
            extra=KEPT,
            monkeypatch=monkeypatch,
        ) as made:
            monkeypatch.delenv("DDBCDC_STREAM_NAME", raising=False)  # no stream: a static copy
            made.put([item(n) for n in range(1, 4)])
            assert main(["snapshot", "--force", "--no-progress"]) == 0
            yield made


@pytest.fixture
def restored(table: BackfillTable) -> Iterator[BackfillTable]:
    """The table; the drifted row is put back as it was afterwards."""
    live = mapped_tables([table.mapping])[table.mapping.target_table].live
    engine = sa.create_engine(table.database_url)
    with engine.connect() as conn:
        saved = dict(conn.execute(sa.select(live).where(live.c.userid == DRIFTED)).one()._mapping)
    yield table
    with engine.begin() as conn:
        conn.execute(sa.delete(live).where(live.c.userid.in_([DRIFTED, DRIFTED + 1000])))
        conn.execute(sa.insert(live).values(saved))
    engine.dispose()


def by_verify(table: BackfillTable, capsys: pytest.CaptureFixture[str]) -> dict[str, set[int]]:
    """Keys by kind of difference, as ``ddbcdc verify`` reports them."""
    capsys.readouterr()
    code = main(["verify", "--json", "--no-progress", "--segments", "2"])
    report = json.loads(capsys.readouterr().out)
    found = {
        kind: {s["key"]["userid"] for s in report["samples"] if s["kind"] == kind}
        for kind in ("missing", "extra", "different")
    }
    assert {kind: len(keys) for kind, keys in found.items()} == {k: report[k] for k in found}
    assert code == (1 if report["drift"] else 0)
    return found


def by_compare(table: BackfillTable, capsys: pytest.CaptureFixture[str]) -> dict[str, set[int]]:
    """Keys by kind of difference, as :func:`compare` finds them."""
    engine = sa.create_engine(table.database_url)
    try:
        comparison = compare(table.client(), engine, table.mapping)
    finally:
        engine.dispose()
    return {
        "missing": {k[0] for k in comparison.missing},
        "extra": {k[0] for k in comparison.extra},
        "different": {k[0] for k in comparison.different},
    }


FINDERS = {"ddbcdc verify": by_verify, "compare": by_compare}


@pytest.mark.parametrize("finder", sorted(FINDERS))
def test_the_copy_is_equal_before_any_drift(
    restored: BackfillTable, capsys: pytest.CaptureFixture[str], finder: str
) -> None:
    found = FINDERS[finder](restored, capsys)
    assert found == {"missing": set(), "extra": set(), "different": set()}


@pytest.mark.parametrize("finder", sorted(FINDERS))
@pytest.mark.parametrize("how", ["changed", "nulled"])
@pytest.mark.parametrize("column", sorted(CHANGED))
def test_a_difference_in_any_stored_column_is_found(
    restored: BackfillTable,
    capsys: pytest.CaptureFixture[str],
    column: str,
    how: str,
    finder: str,
) -> None:
    value = CHANGED[column] if how == "changed" else "NULL"
    restored.execute(f'UPDATE "{restored.name}" SET "{column}" = {value} WHERE userid = {DRIFTED}')
    found = FINDERS[finder](restored, capsys)
    assert found == {"missing": set(), "extra": set(), "different": {DRIFTED}}


@pytest.mark.parametrize("finder", sorted(FINDERS))
def test_a_changed_key_is_a_missing_and_an_extra_row(
    restored: BackfillTable, capsys: pytest.CaptureFixture[str], finder: str
) -> None:
    restored.execute(
        f'UPDATE "{restored.name}" SET userid = {DRIFTED + 1000} WHERE userid = {DRIFTED}'
    )
    assert FINDERS[finder](restored, capsys) == {
        "missing": {DRIFTED},
        "extra": {DRIFTED + 1000},
        "different": set(),
    }
