"""``ddbcdc verify [--repair]`` against moto and a real PostgreSQL, on a copy no stream feeds:
drift put in by hand (an edited row, a deleted row, an extra row) is found, reported and
repaired through the versioned path; limits hold (--max-suspects)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from backfill_support import BackfillTable, backfill_table, rich_item
from ddbcdc.cli import main
from ddbcdc.local.stack import LocalStack


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
