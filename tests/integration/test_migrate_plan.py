"""``ddbcdc migrate`` plans against the live tables: additive steps run, destructive ones are
refused with their exact DDL, a dry run changes nothing, and writers check the mapping
version PostgreSQL recorded."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from evolution_support import Mappings, columns, migrate, shipped, write_items

from ddbcdc.cli import main
from ddbcdc.errors import ConfigurationError
from ddbcdc.migrate.run import alembic_config
from ddbcdc.migrate.versions import check_engine, recorded
from ddbcdc.pipeline import Pipeline
from ddbcdc.settings import Settings

HEAD = ScriptDirectory.from_config(alembic_config(None)).get_current_head()  # type: ignore[arg-type]


@pytest.fixture
def db(fresh_database: Callable[..., AbstractContextManager[str]]) -> Iterator[str]:
    with fresh_database("t_plan") as url:
        yield url


@pytest.fixture
def engine(db: str) -> Iterator[sa.Engine]:
    eng = sa.create_engine(db)
    yield eng
    eng.dispose()


@pytest.fixture
def mappings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db: str) -> Mappings:
    return Mappings(tmp_path / "mappings", monkeypatch, db)


def version(engine: sa.Engine) -> int | None:
    with engine.connect() as conn:
        found = recorded(conn, "customers")
    return found.version if found else None


def test_a_dry_run_prints_every_statement_and_changes_nothing(
    engine: sa.Engine, mappings: Mappings, capsys: pytest.CaptureFixture[str]
) -> None:
    mappings.write(shipped())
    assert migrate("--dry-run") == 0
    out = capsys.readouterr().out
    assert f"revisions: empty -> {HEAD}" in out
    assert "customers (" in out and "mapping version none -> 1" in out
    # Revision 0002 made the table without the kept column: the plan adds it.
    assert "add column customers attributes JSONB" in out
    assert "    ALTER TABLE customers ADD COLUMN attributes JSONB;" in out
    assert "dry run: nothing was changed" in out
    with engine.connect() as conn:
        assert sa.inspect(conn).get_table_names() == []

    assert migrate() == 0
    capsys.readouterr()
    doc = shipped()
    doc["columns"].append({"name": "city", "type": "text", "rules": ["trim"]})
    mappings.write(doc)
    before = columns(engine)
    assert migrate("--dry-run") == 0
    out = capsys.readouterr().out
    assert out.splitlines()[:5] == [
        f"revision: {HEAD}",
        f"customers ({mappings.directory / 'customers.json'}): mapping version 1 -> 2",
        "  add column customers city TEXT (attribute 'city')",
        "    ALTER TABLE customers ADD COLUMN city TEXT;",
        "  backfill city from attributes",
    ]
    assert columns(engine) == before and version(engine) == 1


def test_an_unchanged_mapping_is_a_no_op(
    engine: sa.Engine, mappings: Mappings, capsys: pytest.CaptureFixture[str]
) -> None:
    mappings.write(shipped())
    assert migrate() == 0 and version(engine) == 1
    capsys.readouterr()
    assert migrate() == 0
    out = capsys.readouterr().out
    assert "mapping version 1 (unchanged)" in out and "  matches its tables" in out
    assert version(engine) == 1


def _drop_phone(doc: dict[str, Any]) -> None:
    doc["columns"] = [c for c in doc["columns"] if c["name"] != "phone"]


def _retype_phone(doc: dict[str, Any]) -> None:
    doc["columns"][3] = {"name": "phone", "type": "numeric"}


def _no_extra(doc: dict[str, Any]) -> None:
    del doc["extra"]


def _no_change_log(doc: dict[str, Any]) -> None:
    doc["change_log"] = False


@pytest.mark.parametrize(
    ("change", "ddl", "after"),
    [
        (_drop_phone, "ALTER TABLE customers DROP COLUMN phone", lambda c: "phone" not in c),
        (
            _retype_phone,
            "ALTER TABLE customers ALTER COLUMN phone TYPE NUMERIC USING phone::numeric",
            lambda c: c["phone"][0] == "NUMERIC",
        ),
        (
            _no_extra,
            "ALTER TABLE customers DROP COLUMN attributes",
            lambda c: "attributes" not in c,
        ),
        (_no_change_log, "DROP TABLE ddbcdc_changes__customers", lambda c: True),
    ],
    ids=["column removed", "column retyped", "kept column removed", "change log off"],
)
def test_each_destructive_change_is_refused_with_its_ddl_unless_allowed(
    engine: sa.Engine,
    mappings: Mappings,
    capsys: pytest.CaptureFixture[str],
    change: Callable[[dict[str, Any]], None],
    ddl: str,
    after: Callable[[dict[str, tuple[str, bool]]], bool],
) -> None:
    mappings.write(shipped())
    assert migrate() == 0
    write_items(engine, mappings.write(shipped()), {1: {"first_name": "Ada", "phone": 5550100}})
    doc = shipped()
    change(doc)
    mappings.write(doc)
    before = columns(engine)
    capsys.readouterr()
    assert migrate() == 2
    message = capsys.readouterr().err
    assert "ddbcdc migrate: refusing destructive changes" in message
    assert "--allow-destructive" in message
    assert f"    {ddl};" in message.splitlines()
    assert columns(engine) == before and version(engine) == 1  # nothing changed

    assert migrate("--dry-run", "--allow-destructive") == 0
    assert f"    {ddl};" in capsys.readouterr().out.splitlines()
    assert columns(engine) == before

    assert migrate("--allow-destructive") == 0
    assert after(columns(engine)) and version(engine) == 2
    with engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
    assert ("ddbcdc_changes__customers" in tables) == doc["change_log"]
    check_engine(engine, [mappings.write(doc)])  # a writer with the new mapping may start


@pytest.mark.parametrize(
    ("change", "gone"),
    [(_drop_phone, "phone"), (_no_extra, "attributes"), (_no_change_log, None)],
    ids=["column removed", "kept column removed", "change log off"],
)
def test_a_drop_that_loses_no_row_runs_without_being_allowed(
    engine: sa.Engine,
    mappings: Mappings,
    capsys: pytest.CaptureFixture[str],
    change: Callable[[dict[str, Any]], None],
    gone: str | None,
) -> None:
    """On tables that hold nothing yet (a fresh database), turning the change log off or
    removing a column is no loss: migrate runs it and reports it as additive."""
    mappings.write(shipped())
    assert migrate() == 0
    doc = shipped()
    change(doc)
    mappings.write(doc)
    capsys.readouterr()
    assert migrate() == 0, capsys.readouterr().err
    assert "[destructive]" not in capsys.readouterr().out
    if gone is not None:
        assert gone not in columns(engine)
    with engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
    assert ("ddbcdc_changes__customers" in tables) == doc["change_log"]
    assert version(engine) == 2
    write_items(engine, mappings.write(doc), {1: {"first_name": "Ada", "phone": 5550100}})


def test_a_retype_postgresql_cannot_cast_changes_nothing(
    engine: sa.Engine, mappings: Mappings, capsys: pytest.CaptureFixture[str]
) -> None:
    mappings.write(shipped())
    migrate()
    write_items(engine, mappings.write(shipped()), {1: {"first_name": "Ada"}})
    doc = shipped()
    doc["columns"][1] = {"name": "first_name", "type": "bigint"}
    mappings.write(doc)
    capsys.readouterr()
    assert migrate("--allow-destructive") == 2
    assert "retype column customers first_name TEXT -> BIGINT failed" in capsys.readouterr().err
    assert columns(engine)["first_name"][0] == "TEXT" and version(engine) == 1


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["columns"][0].update(type="text"),
        lambda d: d.update(key=["userid", "first_name"]),
    ],
    ids=["key retyped", "key changed"],
)
def test_a_key_change_is_no_migration(
    engine: sa.Engine,
    mappings: Mappings,
    capsys: pytest.CaptureFixture[str],
    change: Callable[[dict[str, Any]], None],
) -> None:
    mappings.write(shipped())
    migrate()
    doc = shipped()
    change(doc)
    doc["columns"][1].pop("rules", None)
    mappings.write(doc)
    capsys.readouterr()
    assert migrate("--allow-destructive") == 2
    assert "not a migration ddbcdc can run" in capsys.readouterr().err
    assert version(engine) == 1


def test_optional_and_required_flags_follow_the_mapping(
    engine: sa.Engine, mappings: Mappings, capsys: pytest.CaptureFixture[str]
) -> None:
    mappings.write(shipped())
    migrate()
    write_items(engine, mappings.write(shipped()), {1: {"first_name": "Ada"}})
    doc = shipped()
    doc["columns"][1]["required"] = True
    mappings.write(doc)
    assert migrate() == 0
    assert columns(engine)["first_name"] == ("TEXT", False)
    doc["columns"][1]["required"] = False
    mappings.write(doc)
    capsys.readouterr()
    assert migrate() == 0
    assert "ALTER TABLE customers ALTER COLUMN first_name DROP NOT NULL;" in capsys.readouterr().out
    assert columns(engine)["first_name"] == ("TEXT", True)


def test_writers_refuse_a_mapping_other_than_the_recorded_one(
    engine: sa.Engine,
    mappings: Mappings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    old = mappings.write(shipped())
    with pytest.raises(ConfigurationError, match="no ddbcdc_mapping_versions table"):
        check_engine(engine, [old])
    migrate()
    check_engine(engine, [old])
    doc = shipped()
    doc["columns"].append({"name": "city", "type": "text"})
    doc["columns"][3]["rules"] = []
    new = mappings.write(doc)
    with pytest.raises(ConfigurationError) as refused:
        check_engine(engine, [new])
    message = str(refused.value)
    assert "differs from the one table 'customers' was migrated to (version 1" in message
    assert "column 'city' added" in message
    assert "column 'phone': rules ['digits_only'] -> []" in message
    with pytest.raises(ConfigurationError, match="column 'city' added"):
        Pipeline.from_settings(Settings())

    changes = tmp_path / "changes.jsonl"
    changes.write_text("")
    assert main(["apply", str(changes)]) == 2
    assert "column 'city' added" in capsys.readouterr().err
    monkeypatch.setenv("DDBCDC_STREAM_NAME", "customers-cdc")
    assert main(["worker"]) == 2  # before any daemon starts
    assert "column 'city' added" in capsys.readouterr().err

    migrate()  # the table moves to the new mapping: now the old one is refused
    assert version(engine) == 2
    with pytest.raises(ConfigurationError, match="column 'city' removed"):
        check_engine(engine, [old])
    Pipeline.from_settings(Settings()).close()
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT mapping FROM ddbcdc_mapping_versions")).scalar()
    assert stored["columns"][-1] == {
        "name": "city",
        "source": "city",
        "type": "text",
        "required": False,
        "default": None,
        "rules": [],
    }


def test_a_table_without_a_recorded_version_is_refused(
    engine: sa.Engine, mappings: Mappings
) -> None:
    mapping = mappings.write(shipped())
    migrate()
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM ddbcdc_mapping_versions"))
    with pytest.raises(ConfigurationError, match="has no recorded mapping version: run ddbcdc"):
        check_engine(engine, [mapping])
