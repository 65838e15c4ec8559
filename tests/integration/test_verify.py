"""``ddbcdc verify [--repair]`` against moto and a real PostgreSQL, on a copy no stream feeds:
drift put in by hand (an edited row, a deleted row, an extra row, any stored column, the
kept ones included) is found, reported and repaired through the versioned path, and the
in-memory comparison gives the same answer; limits hold (--max-suspects)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
import sqlalchemy as sa

from backfill_support import BackfillTable, backfill_table, rich_item
from ddbcdc.cli import main
from ddbcdc.local.stack import LocalStack
from ddbcdc.verify.compare import compare


@pytest.fixture
def table(
    local_stack: LocalStack,
    fresh_database: Callable[..., AbstractContextManager[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[BackfillTable]:
    with backfill_table(local_stack, fresh_database, tmp_path, monkeypatch=monkeypatch) as made:
        monkeypatch.delenv("DDBCDC_STREAM_NAME", raising=False)  # no stream: a static copy
        made.put([rich_item(n, f"name{n}") for n in range(1, 201)])
        assert main(["snapshot", "--force", "--no-progress"]) == 0
        yield made


def verify(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, object]]:
    capsys.readouterr()
    code = main(["verify", "--json", "--no-progress", "--segments", "3", *args])
    return code, json.loads(capsys.readouterr().out)


def test_an_equal_copy_is_no_drift(
    table: BackfillTable, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = verify(capsys)
    assert code == 0
    assert report["drift"] is False and report["items"] == 200 and report["rows"] == 200
    assert report["missing"] == report["extra"] == report["different"] == report["suspects"] == 0


def test_drift_is_found_reported_and_repaired(
    table: BackfillTable, capsys: pytest.CaptureFixture[str]
) -> None:
    t = f'"{table.name}"'
    table.execute(f"UPDATE {t} SET first_name = 'hand edit' WHERE userid = 5")
    table.execute(f"UPDATE {t} SET profile = '{{\"tags\": []}}' WHERE userid = 6")
    table.execute(f"DELETE FROM {t} WHERE userid = 7")
    table.execute(
        f"INSERT INTO {t} (userid, first_name, _ddbcdc_version_us, _ddbcdc_event_id) "
        "VALUES (9001, 'ghost', 1, 'by hand')"
    )
    code, report = verify(capsys, "--show-values")
    assert code == 1 and report["drift"] is True
    assert (report["missing"], report["extra"], report["different"]) == (1, 1, 2)
    samples = {(s["kind"], s["key"]["userid"]): s for s in report["samples"]}  # type: ignore[union-attr, index]
    assert set(samples) == {("different", 5), ("different", 6), ("missing", 7), ("extra", 9001)}
    assert samples[("different", 5)]["postgresql"]["first_name"] == "hand edit"
    assert samples[("different", 5)]["dynamodb"]["first_name"] == "name5"
    assert samples[("missing", 7)]["postgresql"] is None
    assert report["repaired"] == 0

    code, plain = verify(capsys)  # values only with --show-values
    assert code == 1 and all("dynamodb" not in s for s in plain["samples"])  # type: ignore[attr-defined]

    code, repaired = verify(capsys, "--repair")
    assert code == 1 and repaired["repaired"] == 4 and repaired["superseded"] == 0
    code, after = verify(capsys)
    assert code == 0 and after["rows"] == 200
    assert table.query(f"SELECT first_name FROM {t} WHERE userid = 5") == [("name5",)]
    assert table.query(f"SELECT count(*) FROM {t} WHERE userid IN (7, 9001)") == [(1,)]
    ghost = table.query(
        f'SELECT _ddbcdc_deleted, _ddbcdc_event_id FROM "ddbcdc_versions__{table.name}" '
        "WHERE userid = 9001"
    )
    assert ghost[0][0] is True and ghost[0][1].startswith("verify:")  # a REMOVE's tombstone
    assert table.query(f'SELECT count(*) FROM "ddbcdc_changes__{table.name}"') == [(0,)]


def test_a_repair_postgresql_refuses_is_a_dead_letter_not_superseded(
    table: BackfillTable, capsys: pytest.CaptureFixture[str]
) -> None:
    """A repair refused by a constraint of the user's is dead-lettered and still drift: it
    is not a repair that lost to a newer change."""
    t = f'"{table.name}"'
    table.execute(f"DELETE FROM {t} WHERE userid IN (7, 8)")
    table.execute(f"ALTER TABLE {t} ADD CONSTRAINT not_seven CHECK (userid <> 7)")
    code, report = verify(capsys, "--repair")
    assert code == 1 and report["missing"] == 2
    assert (report["repaired"], report["superseded"], report.get("dead_lettered")) == (1, 0, 1)
    assert table.query("SELECT stage FROM ddbcdc_dead_letters") == [("apply",)]
    capsys.readouterr()
    assert main(["verify", "--no-progress", "--repair"]) == 1
    out = capsys.readouterr().out
    assert "repaired 0, superseded by newer changes 0, dead-lettered 1 (ddbcdc dlq list)" in out


def test_a_mapping_its_table_was_not_migrated_to_is_refused_not_taken_for_drift(
    table: BackfillTable, capsys: pytest.CaptureFixture[str]
) -> None:
    """Items are compared as the rows the worker writes, and the worker refuses a mapping
    other than the table's: so does verify, rather than report a correct copy as drift."""
    path = table.mappings_dir / f"{table.name}.json"
    document = json.loads(path.read_text())
    document["columns"][1]["rules"] = ["uppercase"]  # first_name, not migrated
    path.write_text(json.dumps(document))
    capsys.readouterr()
    assert main(["verify", "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"ddbcdc verify: mapping {path} differs from the one table ")
    assert "column 'first_name': rules ['trim'] -> ['uppercase']" in captured.err


def test_text_report_and_the_suspect_limit(
    table: BackfillTable, capsys: pytest.CaptureFixture[str]
) -> None:
    table.execute(f'DELETE FROM "{table.name}" WHERE userid <= 3')
    code, report = verify(capsys, "--max-suspects", "1")
    assert code == 1
    assert report["suspects"] == 3 and report["missing"] == 1 and report["unconfirmed"] == 2
    capsys.readouterr()
    assert main(["verify", "--no-progress", "--samples", "1"]) == 1
    out = capsys.readouterr().out
    assert "200 items, 197 rows; 3 missing, 0 extra, 0 different" in out
    assert out.count("missing: {") == 1


def test_a_worker_that_does_not_pass_the_re_read_leaves_suspects_unconfirmed(
    table: BackfillTable, capsys: pytest.CaptureFixture[str]
) -> None:
    """A worker is known (shard progress) but stands still: a difference cannot be told from
    a change on its way, so it is neither confirmed nor repaired, and still counts as drift."""
    table.execute(f"UPDATE \"{table.name}\" SET first_name = 'stale' WHERE userid = 9")
    table.execute(
        "INSERT INTO ddbcdc_shard_progress (application, shard_id, sequence_number, "
        "records_total, batches_total, max_version_us) VALUES (:app, 'shardId-000000000000', "
        "'1', 1, 1, 1000)",
        app=table.env["DDBCDC_APPLICATION_NAME"],
    )
    code, report = verify(capsys, "--settle-timeout", "1", "--repair")
    assert code == 1 and report["drift"] is True
    assert report["unconfirmed"] == 1 and report["different"] == 0 and report["repaired"] == 0
    assert table.query(f'SELECT first_name FROM "{table.name}" WHERE userid = 9') == [("stale",)]


KEPT = {"column": "attributes", "item_column": "item"}
#: One planted difference per stored column but the key: an UPDATE of the row ``userid``.
#: Each is one a looser comparison misses: a digit past float precision, ``true`` for ``1``
#: (equal in Python), a microsecond, an attribute of the kept columns.
PLANTED = {
    "first_name": (1, "first_name = 'hand edit'"),
    "phone": (2, "phone = '0'"),
    "score": (3, "score = score + 0.000000001"),
    "active": (4, "active = NOT active"),
    "avatar": (5, "avatar = '\\x00'::bytea"),
    "profile": (6, "profile = jsonb_set(profile, '{n}', '1.00000000000000000001')"),
    "joined": (7, "joined = joined + interval '1 microsecond'"),
    "attributes": (8, "attributes = jsonb_set(attributes, '{level}', 'true')"),
    "item": (9, "item = jsonb_set(item, '{city}', '\"Bergen\"')"),
}


def kept_item(userid: int) -> dict[str, object]:
    """A rich item with attributes no column maps (kept in ``attributes`` and ``item``)."""
    return {**rich_item(userid), "level": {"N": "1"}, "city": {"S": "Oslo"}}


@pytest.fixture
def kept_table(
    local_stack: LocalStack,
    fresh_database: Callable[..., AbstractContextManager[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[BackfillTable]:
    with backfill_table(
        local_stack, fresh_database, tmp_path, extra=KEPT, monkeypatch=monkeypatch
    ) as made:
        monkeypatch.delenv("DDBCDC_STREAM_NAME", raising=False)  # no stream: a static copy
        made.put([kept_item(n) for n in range(1, 21)])
        assert main(["snapshot", "--force", "--no-progress"]) == 0
        yield made


def stored(table: BackfillTable) -> list[tuple[object, ...]]:
    """Every stored column of every live row (jsonb as PostgreSQL prints it), by key."""
    columns = ", ".join(f'"{c}"' for c in table.mapping.stored_columns)
    return table.query(f'SELECT {columns} FROM "{table.name}" ORDER BY userid')


def test_drift_in_every_stored_column_kept_ones_included_is_found_and_repaired(
    kept_table: BackfillTable, capsys: pytest.CaptureFixture[str]
) -> None:
    table = kept_table
    assert set(table.mapping.stored_columns) == {"userid", *PLANTED}
    before = stored(table)
    t = f'"{table.name}"'
    for userid, change in PLANTED.values():
        table.execute(f"UPDATE {t} SET {change} WHERE userid = {userid}")
    # The same values spelled otherwise are no drift: 1.00 is the number 1, maps in any order.
    table.execute(f"""UPDATE {t} SET attributes = '{{"level": 1.00, "city": "Oslo"}}'
                      WHERE userid = 10""")

    code, report = verify(capsys, "--show-values", "--samples", "20")
    assert code == 1 and report["drift"] is True
    assert (report["missing"], report["extra"], report["different"]) == (0, 0, len(PLANTED))
    keys = {s["key"]["userid"] for s in report["samples"]}  # type: ignore[union-attr, index]
    assert keys == {userid for userid, _ in PLANTED.values()}
    by_key = {s["key"]["userid"]: s for s in report["samples"]}  # type: ignore[union-attr, index]
    assert by_key[8]["postgresql"]["attributes"]["level"] is True
    assert by_key[8]["dynamodb"]["attributes"]["level"] == 1

    # The in-memory comparison gives the same answer.
    comparison = compare(table.client(), engine_of(table), table.mapping)
    assert set(comparison.different) == {(userid,) for userid, _ in PLANTED.values()}
    assert not comparison.missing and not comparison.extra

    code, repaired = verify(capsys, "--repair")
    assert code == 1 and repaired["repaired"] == len(PLANTED) and repaired["superseded"] == 0
    code, after = verify(capsys)
    assert code == 0 and after["drift"] is False and after["suspects"] == 0
    after_rows = stored(table)
    assert [r for r in after_rows if r[0] != 10] == [r for r in before if r[0] != 10]
    assert compare(table.client(), engine_of(table), table.mapping).matches


def engine_of(table: BackfillTable) -> sa.Engine:
    return sa.create_engine(table.database_url, poolclass=sa.pool.NullPool)
