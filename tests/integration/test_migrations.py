"""Migrations: upgrade from empty, match the Core tables, downgrade and upgrade again."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from ddbcdc.cli import main
from ddbcdc.commands import migrate
from ddbcdc.errors import ConfigurationError
from ddbcdc.migrate import run as migration
from ddbcdc.migrate.versions import HEAD_REVISION
from ddbcdc.schema.mapping import load_mappings
from ddbcdc.schema.tables import metadata_for

SHIPPED_DIR = Path(__file__).resolve().parents[2] / "schemas" / "tables"
SHIPPED = load_mappings(SHIPPED_DIR)


@pytest.fixture
def db(fresh_database: Callable[..., AbstractContextManager[str]]) -> Iterator[str]:
    """A fresh, empty database for each test."""
    with fresh_database("t_migrations") as url:
        yield url


def tables(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return set(sa.inspect(conn).get_table_names())


def run(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser()
    migrate.register(parser.add_subparsers())
    args = parser.parse_args(["migrate", *argv])
    return int(args.func(args))


EXPECTED = {
    "alembic_version",
    "ddbcdc_dead_letters",
    "ddbcdc_shard_progress",
    "ddbcdc_shard_failures",
    "ddbcdc_prune_state",
    "ddbcdc_prune_holds",
    "ddbcdc_mapping_versions",
    "ddbcdc_backfills",
    "ddbcdc_snapshots",
    "ddbcdc_snapshot_segments",
    "ddbcdc_table_progress",
    "ddbcdc_stream_time",
    "customers",
    "ddbcdc_versions__customers",
    "ddbcdc_changes__customers",
}


def test_upgrade_downgrade_upgrade(db: str) -> None:
    engine = sa.create_engine(db)
    assert migration.upgrade(engine, SHIPPED) == []  # revisions created everything shipped
    assert tables(engine) == EXPECTED
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata_for(SHIPPED)) == []
    migration.downgrade(engine, revision="base")
    assert tables(engine) == {"alembic_version"}
    migration.upgrade(engine, SHIPPED, revision="0001")
    assert tables(engine) == {"alembic_version", "ddbcdc_dead_letters", "ddbcdc_shard_progress"}
    migration.upgrade(engine, SHIPPED)
    assert tables(engine) == EXPECTED
    engine.dispose()


def test_new_mapping_gets_tables_and_a_changed_one_is_refused(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(SHIPPED_DIR / "customers.json", tmp_path / "customers.json")
    orders = {
        "source_table": "Orders",
        "target_table": "orders",
        "key": ["order_id", "line"],
        "columns": [
            {"name": "order_id", "type": "text"},
            {"name": "line", "type": "integer"},
            {"name": "amount", "type": "numeric", "required": True},
            {"name": "doc", "type": "jsonb"},
        ],
    }
    (tmp_path / "orders.json").write_text(json.dumps(orders))
    monkeypatch.setenv("DATABASE_URL", db)
    monkeypatch.setenv("DDBCDC_MAPPINGS_DIR", str(tmp_path))
    assert run([]) == 0
    out = capsys.readouterr().out
    assert "created table orders" in out and "created table ddbcdc_versions__orders" in out
    engine = sa.create_engine(db)
    assert {"orders", "ddbcdc_versions__orders"} <= tables(engine)
    assert "ddbcdc_changes__orders" not in tables(engine)
    assert run([]) == 0  # idempotent: existing tables match
    assert "created" not in capsys.readouterr().out

    orders["columns"][2]["type"] = "bigint"  # type: ignore[index]
    (tmp_path / "orders.json").write_text(json.dumps(orders))
    with pytest.raises(ConfigurationError, match=r"retype column orders amount NUMERIC -> BIGINT"):
        run([])
    assert run(["--downgrade", "base"]) == 0
    # Left alone by the revisions, but put back in the format of before revision 0003.
    assert tables(engine) == {"alembic_version", "orders", "ddbcdc_tombstones__orders"}
    engine.dispose()


def test_0003_turns_tombstones_and_live_rows_into_versions(db: str) -> None:
    """Live rows and tombstones become one versions row per key, the newer winning; a live
    row older than its key's tombstone (two overlapping transactions) is deleted."""
    engine = sa.create_engine(db)
    migration.upgrade(engine, SHIPPED, revision="0002")
    version = "_ddbcdc_version_us, _ddbcdc_event_id) "
    live = "INSERT INTO customers (userid, first_name, " + version
    tomb = "INSERT INTO ddbcdc_tombstones__customers (userid, " + version
    with engine.begin() as conn:
        conn.execute(sa.text(live + "VALUES (1, 'alive', 100, 'a'), (2, 'resurrected', 100, 'b')"))
        conn.execute(sa.text(live + "VALUES (3, 'reinserted', 300, 'c')"))
        conn.execute(sa.text(tomb + "VALUES (2, 200, 'd'), (3, 200, 'e'), (4, 50, 'f')"))
    migration.upgrade(engine, SHIPPED)
    with engine.connect() as conn:
        versions = conn.execute(
            sa.text(
                "SELECT userid, _ddbcdc_version_us, _ddbcdc_deleted "
                "FROM ddbcdc_versions__customers ORDER BY userid"
            )
        ).all()
        alive = conn.execute(sa.text("SELECT userid FROM customers ORDER BY userid")).scalars()
        assert list(alive) == [1, 3]
    assert versions == [(1, 100, False), (2, 200, True), (3, 300, False), (4, 50, True)]
    migration.downgrade(engine, revision="0002")
    with engine.connect() as conn:
        back = conn.execute(
            sa.text("SELECT userid FROM ddbcdc_tombstones__customers ORDER BY userid")
        ).scalars()
        assert list(back) == [2, 4]
    engine.dispose()


def _columns(engine: sa.Engine, table: str) -> set[str]:
    with engine.connect() as conn:
        return {c["name"] for c in sa.inspect(conn).get_columns(table)}


def _has_fence(engine: sa.Engine) -> bool:
    query = sa.text("SELECT count(*) FROM pg_proc WHERE proname = 'ddbcdc_fence'")
    with engine.connect() as conn:
        return bool(conn.execute(query).scalar())


def test_0008_gives_every_change_log_the_removal_cause_after_the_fence(db: str) -> None:
    """Revision 0008 follows the fence revision: every change log (the shipped one and one
    ``ddbcdc migrate`` made) gains ``_ddbcdc_removed_by``, rows logged before it NULL; going
    down to the fence revision drops only the column, and below it the fence goes."""
    engine = sa.create_engine(db)
    migration.upgrade(engine, SHIPPED, revision="0007_mapping_fence")
    assert _has_fence(engine)
    assert "_ddbcdc_removed_by" not in _columns(engine, "ddbcdc_changes__customers")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE ddbcdc_changes__orders (event_id text PRIMARY KEY)"))
        conn.execute(sa.text("INSERT INTO ddbcdc_changes__orders VALUES ('logged-before')"))
    migration.upgrade(engine, SHIPPED, revision="0008_removal_cause")
    for log in ("ddbcdc_changes__customers", "ddbcdc_changes__orders"):
        assert "_ddbcdc_removed_by" in _columns(engine, log)
    with engine.connect() as conn:
        before = conn.execute(sa.text("SELECT _ddbcdc_removed_by FROM ddbcdc_changes__orders"))
        assert before.all() == [(None,)]
        context = MigrationContext.configure(conn)
        assert context.get_current_revision() == "0008_removal_cause"
    migration.downgrade(engine, revision="0007_mapping_fence")
    for log in ("ddbcdc_changes__customers", "ddbcdc_changes__orders"):
        assert "_ddbcdc_removed_by" not in _columns(engine, log)
    assert _has_fence(engine)
    migration.downgrade(engine, revision="0006_freshness")
    assert not _has_fence(engine)
    migration.upgrade(engine, SHIPPED)
    assert "_ddbcdc_removed_by" in _columns(engine, "ddbcdc_changes__customers")
    engine.dispose()


def test_an_unknown_revision_or_a_schema_a_newer_ddbcdc_migrated_is_refused_in_one_line(
    db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", db)
    monkeypatch.setenv("DDBCDC_MAPPINGS_DIR", str(SHIPPED_DIR))
    assert main(["migrate"]) == 0
    for argv in (["migrate", "--revision", "nosuch"], ["migrate", "--downgrade", "nosuch"]):
        assert main(argv) == 2
        assert capsys.readouterr().err.startswith("ddbcdc migrate: schema revision: ")
    assert main(["migrate", "--revision", "0005"]) == 2  # older: no upgrade, and said so
    assert capsys.readouterr().err == (
        "ddbcdc migrate: schema revision: '0005' is older than PostgreSQL's schema "
        f"({HEAD_REVISION!r}), so nothing was upgraded: to go back to it, run ddbcdc "
        "migrate --downgrade 0005\n"
    )
    engine = sa.create_engine(db)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0099_future'"))
    engine.dispose()
    for argv in (["migrate"], ["migrate", "--dry-run"]):
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("ddbcdc migrate: ") and len(err.splitlines()) == 1, err
        assert "'0099_future'" in err and "newer" in err


def test_writers_refuse_a_schema_not_at_this_ddbcdcs_revision_in_one_line(
    db: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A schema taken down a revision (or left behind by an upgrade of ddbcdc) is refused
    when a writer starts, naming both revisions, rather than failing every batch on a column
    or function the older schema lacks; so is one a newer ddbcdc migrated."""
    monkeypatch.setenv("DATABASE_URL", db)
    monkeypatch.setenv("DDBCDC_MAPPINGS_DIR", str(SHIPPED_DIR))
    assert main(["migrate"]) == 0
    assert main(["migrate", "--downgrade", "0008_removal_cause"]) == 0
    record = {
        "eventID": "e1",
        "eventName": "INSERT",
        "tableName": "customers",
        "eventSource": "aws:dynamodb",
        "dynamodb": {
            "ApproximateCreationDateTime": 1_700_000_000_000,
            "Keys": {"userid": {"N": "1"}},
            "NewImage": {"userid": {"N": "1"}, "first_name": {"S": "Ada"}},
        },
    }
    source = tmp_path / "records.jsonl"
    source.write_text(json.dumps(record) + "\n")
    engine = sa.create_engine(db)
    for revision, needed in (("0008_removal_cause", "run ddbcdc migrate"), ("0099_x", "newer")):
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
        for argv in (["apply", str(source)], ["dlq", "replay"]):
            capsys.readouterr()
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert len(err.splitlines()) == 1, err
            assert f"'{revision}'" in err and needed in err, err
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM customers")).scalar() == 0
        assert conn.execute(sa.text("SELECT count(*) FROM ddbcdc_dead_letters")).scalar() == 0
    engine.dispose()


def _shop_change(pk: str, sk: str, us: int, **image: dict[str, str]) -> str:
    keys = {"PK": {"S": pk}, "SK": {"S": sk}}
    return json.dumps(
        {
            "eventID": f"{pk}/{sk}/{us}",
            "eventName": "INSERT",
            "tableName": "shop",
            "eventSource": "aws:dynamodb",
            "dynamodb": {
                "ApproximateCreationDateTime": us,
                "Keys": keys,
                "NewImage": {**keys, **image},
            },
        }
    )


def test_a_routed_mappings_versions_survive_a_downgrade_to_base_and_back(
    db: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Down to base and up again with a routed mapping: its versions table (whose live keys
    no revision could rebuild from its routes' tables) is left alone, so ``migrate`` runs up
    again and a change already applied is still stale."""
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    shutil.copy(SHIPPED_DIR.parent / "single_table" / "shop.json", mappings / "shop.json")
    monkeypatch.setenv("DATABASE_URL", db)
    monkeypatch.setenv("DDBCDC_MAPPINGS_DIR", str(mappings))
    records = tmp_path / "shop.jsonl"
    records.write_text(
        _shop_change("CUSTOMER#1", "PROFILE", 1_700_000_000_000, email={"S": "a@x"})
        + "\n"
        + _shop_change("ORDER#10", "LINE#1", 1_700_000_000_001, sku={"S": "k"})
        + "\n"
    )
    assert main(["migrate"]) == 0
    assert main(["apply", str(records)]) == 0
    query = sa.text("SELECT pk, sk, _ddbcdc_version_us, _ddbcdc_route FROM ddbcdc_versions__shop")
    engine = sa.create_engine(db)
    with engine.connect() as conn:
        before = sorted(conn.execute(query).all())
    assert len(before) == 2
    assert main(["migrate", "--downgrade", "base"]) == 0
    capsys.readouterr()
    assert main(["migrate"]) == 0, capsys.readouterr().err
    with engine.connect() as conn:
        assert sorted(conn.execute(query).all()) == before
    capsys.readouterr()
    assert main(["apply", str(records)]) == 0
    assert "upserted 0, deleted 0, stale/skipped 2" in capsys.readouterr().out
    engine.dispose()


def _customer_change(event: str, userid: int, us: int, **image: dict[str, str]) -> str:
    keys = {"userid": {"N": str(userid)}}
    change: dict[str, object] = {"ApproximateCreationDateTime": us, "Keys": keys}
    if image:
        change["NewImage" if event != "REMOVE" else "OldImage"] = {**keys, **image}
    return json.dumps(
        {
            "eventID": f"{event}/{userid}/{us}",
            "eventName": event,
            "tableName": "customers",
            "eventSource": "aws:dynamodb",
            "dynamodb": change,
        }
    )


def test_rows_kept_for_deleted_items_survive_a_downgrade_below_the_versions_and_back(
    db: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Soft deletes, then down below revision 0003 and up again: the rows kept for deleted
    items (they carry their tombstone's version) stay, marked, and their keys stay deleted."""
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    doc = json.loads((SHIPPED_DIR / "customers.json").read_text())
    (mappings / "customers.json").write_text(json.dumps({**doc, "deletes": "soft"}))
    monkeypatch.setenv("DATABASE_URL", db)
    monkeypatch.setenv("DDBCDC_MAPPINGS_DIR", str(mappings))
    inserts, removes = tmp_path / "inserts.jsonl", tmp_path / "removes.jsonl"
    name = {"first_name": {"S": "Ada"}}
    inserts.write_text(
        "\n".join(_customer_change("INSERT", k, 1_700_000_000_000, **name) for k in (1, 2, 3))
    )
    removes.write_text(  # with the item's last image, and without
        _customer_change("REMOVE", 1, 1_700_000_001_000, **name)
        + "\n"
        + _customer_change("REMOVE", 2, 1_700_000_001_000)
    )
    assert main(["migrate"]) == 0
    assert main(["apply", str(inserts)]) == 0
    assert main(["apply", str(removes)]) == 0
    rows = sa.text(
        "SELECT userid, first_name, _ddbcdc_deleted_at IS NOT NULL FROM customers ORDER BY 1"
    )
    deleted = sa.text(
        "SELECT userid FROM ddbcdc_versions__customers WHERE _ddbcdc_deleted ORDER BY 1"
    )
    engine = sa.create_engine(db)
    with engine.connect() as conn:
        assert conn.execute(rows).all() == [(1, "Ada", True), (2, "Ada", True), (3, "Ada", False)]
    assert main(["migrate", "--downgrade", "0002"]) == 0
    capsys.readouterr()
    assert main(["migrate"]) == 0, capsys.readouterr().err
    with engine.connect() as conn:
        assert conn.execute(rows).all() == [(1, "Ada", True), (2, "Ada", True), (3, "Ada", False)]
        assert conn.execute(deleted).scalars().all() == [1, 2]
    engine.dispose()


def test_a_writer_at_the_newest_revision_starts_without_loading_alembic(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alembic (~0.1 s of imports) is loaded only to say where a schema is that is not at
    the newest revision: every writer checks it at start, every shard processor too."""
    monkeypatch.setenv("DATABASE_URL", db)
    monkeypatch.setenv("DDBCDC_MAPPINGS_DIR", str(SHIPPED_DIR))
    assert main(["migrate"]) == 0
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code = (
        "import sys; from ddbcdc.cli import main; status = main(['apply', sys.argv[1]]); "
        "print(status, 'alembic' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(empty)], capture_output=True, text=True, timeout=120
    )
    assert done.stdout.split()[-2:] == ["0", "False"], done.stdout + done.stderr
