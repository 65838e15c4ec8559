"""``ddbcdc snapshot --from-export FOLDER`` against a real PostgreSQL, with export folders laid
out as AWS documents them: full, incremental, corrupt, ION, without manifests, killed and
resumed. No AWS here: the preconditions cannot run, so the imports go ahead with --force."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from ddbcdc.cli import main
from ddbcdc.local.postgres import free_port
from ddbcdc.materialize.prune import hold
from ddbcdc.schema.mapping import load_mappings
from export_fixtures import customer, full_lines, incremental_line, write_export

ROOT = Path(__file__).resolve().parents[2]
MAPPINGS_DIR = ROOT / "schemas" / "tables"
MAPPINGS = load_mappings(MAPPINGS_DIR)
EXPORT_US = 1_764_000_000_123_000  # 2025-11-24T16:00:00.123Z
MARGIN_US = 5_000_000  # the default DDBCDC_CLOCK_SKEW_MARGIN


@pytest.fixture
def db(
    fresh_database: Callable[..., AbstractContextManager[str]], monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    with fresh_database("t_export", mappings=MAPPINGS) as url:
        nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens: AWS is unreachable
        for name, value in {
            "DATABASE_URL": url,
            "DDBCDC_MAPPINGS_DIR": str(MAPPINGS_DIR),
            "DDBCDC_DYNAMODB_ENDPOINT": nowhere,
            "DDBCDC_KINESIS_ENDPOINT": nowhere,
            "DDBCDC_STREAM_NAME": "ddbcdc-test",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }.items():
            monkeypatch.setenv(name, value)
        yield url


def query(url: str, text: str, **params: Any) -> list[Any]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = list(conn.execute(sa.text(text), params).all())
    engine.dispose()
    return rows


def customers(url: str) -> dict[int, tuple[Any, ...]]:
    rows = query(url, "SELECT userid, first_name, phone, _ddbcdc_version_us FROM customers")
    return {r[0]: tuple(r[1:]) for r in rows}


def full_export(folder: Path, export_id: str = "01764000000123-aaaa0001") -> Path:
    return write_export(
        folder,
        {
            "first.json.gz": full_lines(
                [customer(n, f"name{n}", 5550000000 + n) for n in (1, 2, 3)]
            ),
            "second.json.gz": full_lines([customer(n, f"name{n}") for n in (4, 5)]),
        },
        export_id=export_id,
        export_time_us=EXPORT_US,
    )


def test_full_export_rows_get_the_export_time_minus_the_margin_and_no_change_log(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = full_export(tmp_path / "export")
    assert main(["snapshot", "--from-export", str(folder), "--force", "--no-progress"]) == 0
    assert "export:01764000000123-aaaa0001: 5 items, upserted 5" in capsys.readouterr().out
    rows = customers(db)
    assert rows[1] == ("name1", "5550000001", EXPORT_US - MARGIN_US)
    assert sorted(rows) == [1, 2, 3, 4, 5]
    assert query(db, "SELECT count(*) FROM ddbcdc_changes__customers") == [(0,)]
    assert query(db, "SELECT count(*) FROM ddbcdc_prune_holds") == [(0,)]  # released
    assert query(db, "SELECT status, segments FROM ddbcdc_snapshots") == [("done", 2)]
    events = query(db, "SELECT _ddbcdc_event_id FROM customers WHERE userid = 4")
    assert events == [("export:01764000000123-aaaa0001:1:0",)]
    # Importing it again is a no-op: the run is done.
    assert main(["snapshot", "--from-export", str(folder), "--force", "--no-progress"]) == 0
    assert "imported already" in capsys.readouterr().err


def test_an_incremental_export_applies_its_writes_and_leaves_tombstones(
    db: str, tmp_path: Path
) -> None:
    assert main(["snapshot", "--from-export", str(full_export(tmp_path / "full")), "--force"]) == 0
    later = EXPORT_US + 60_000_000
    write_export(
        tmp_path / "incr",
        {
            "changes.json.gz": [
                incremental_line(later, {"userid": {"N": "1"}}, customer(1, "renamed")),
                incremental_line(later + 1, {"userid": {"N": "2"}}),  # deleted
                incremental_line(later + 2, {"userid": {"N": "9"}}, customer(9, "new")),
                # older than the full export's rows: loses to them
                incremental_line(EXPORT_US - 10 * MARGIN_US, {"userid": {"N": "3"}}),
            ]
        },
        export_id="01764000060000-incr0001",
        incremental=(EXPORT_US, later + 10),
    )
    assert main(["snapshot", "--from-export", str(tmp_path / "incr"), "--force"]) == 0
    rows = customers(db)
    assert sorted(rows) == [1, 3, 4, 5, 9]
    assert rows[1][0] == "renamed" and rows[1][2] == later
    tombstone = query(
        db,
        "SELECT _ddbcdc_version_us, _ddbcdc_deleted FROM ddbcdc_versions__customers "
        "WHERE userid = 2",
    )
    assert tombstone == [(later + 1, True)]
    kinds = query(db, "SELECT kind, status FROM ddbcdc_snapshots ORDER BY started_at")
    assert kinds == [("export", "done"), ("incremental_export", "done")]


def test_a_corrupt_data_file_is_refused_and_nothing_of_it_is_applied(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = full_export(tmp_path / "export")
    good = (folder / "data" / "second.json.gz").read_bytes()
    damaged = bytearray(good)
    damaged[len(damaged) // 2] ^= 0xFF
    (folder / "data" / "second.json.gz").write_bytes(bytes(damaged))
    assert main(["snapshot", "--from-export", str(folder), "--force", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "data/second.json.gz: MD5 checksum" in err
    assert "does not match the manifest's" in err and "nothing of the file was applied" in err
    assert sorted(customers(db)) == [1, 2, 3]  # the first file only
    assert query(db, "SELECT status FROM ddbcdc_snapshots") == [("running",)]
    assert query(db, "SELECT count(*) FROM ddbcdc_prune_holds") == [(1,)]  # kept meanwhile

    (folder / "data" / "second.json.gz").write_bytes(good)  # the file fetched again
    assert main(["snapshot", "--from-export", str(folder), "--force", "--no-progress"]) == 0
    assert sorted(customers(db)) == [1, 2, 3, 4, 5]
    assert query(db, "SELECT sum(items) FROM ddbcdc_snapshot_segments") == [(5,)]
    assert query(db, "SELECT count(*) FROM ddbcdc_prune_holds") == [(0,)]


def test_every_good_file_is_imported_and_every_bad_one_named(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two bad files among four: the good ones (before and after them) are imported, both
    bad ones named in one run; the run stays unfinished, holding pruning, and the run after
    the files are fetched again imports only them."""
    folder = write_export(
        tmp_path / "export",
        {f"f{n}.json.gz": full_lines([customer(n * 10 + k) for k in (1, 2)]) for n in range(4)},
        export_id="01764000000123-bad00001",
        export_time_us=EXPORT_US,
    )
    data = folder / "data"
    good = {name: (data / name).read_bytes() for name in ("f1.json.gz", "f2.json.gz")}
    damaged = bytearray(good["f1.json.gz"])
    damaged[len(damaged) // 2] ^= 0xFF
    (data / "f1.json.gz").write_bytes(bytes(damaged))
    (data / "f2.json.gz").write_bytes(good["f2.json.gz"][:-9])  # truncated
    argv = ["snapshot", "--from-export", str(folder), "--force", "--no-progress"]
    assert main(argv) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith(("not", "ddbcdc"))]
    assert [line.split(": ", 2)[1].rsplit("/", 1)[-1] for line in err[:2]] == [
        "f1.json.gz",
        "f2.json.gz",
    ]
    assert "MD5 checksum" in err[0] and "MD5 checksum" in err[1]
    assert err[0].startswith("not imported: ") and "nothing of the file was applied" in err[1]
    assert "2 data file(s) of export:01764000000123-bad00001 not imported" in err[2]
    assert sorted(customers(db)) == [1, 2, 31, 32]  # the files before and after the bad ones
    assert query(db, "SELECT status FROM ddbcdc_snapshots") == [("running",)]
    assert query(db, "SELECT count(*) FROM ddbcdc_prune_holds") == [(1,)]

    for name, content in good.items():  # the files fetched again
        (data / name).write_bytes(content)
    assert main(argv) == 0
    assert "4 items, upserted 4" in capsys.readouterr().out  # only the two files
    assert sorted(customers(db)) == [1, 2, 11, 12, 21, 22, 31, 32]
    assert query(db, "SELECT count(*) FROM ddbcdc_prune_holds") == [(0,)]


def test_a_replayed_export_row_is_not_written_to_the_change_log(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Backfill rows are never logged: not when imported, not when replayed from the dead
    letters either; a change replayed beside them is logged as ever."""
    engine = sa.create_engine(db)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "ALTER TABLE customers ADD CONSTRAINT no_bob CHECK (first_name <> 'Bob')"
        )
    folder = write_export(
        tmp_path / "export",
        {"only.json.gz": full_lines([customer(1, "Ada"), customer(2, "Bob")])},
        export_id="01764000000123-dlq00001",
        export_time_us=EXPORT_US,
    )
    assert main(["snapshot", "--from-export", str(folder), "--force", "--no-progress"]) == 1
    live = tmp_path / "live.jsonl"  # a change from the stream
    change = {
        "eventID": "0f3a",
        "eventName": "INSERT",
        "tableName": "customers",
        "dynamodb": {
            "ApproximateCreationDateTime": EXPORT_US,
            "Keys": {"userid": {"N": "3"}},
            "NewImage": customer(3, "Bob"),
        },
    }
    live.write_bytes(orjson.dumps(change))
    assert main(["apply", str(live)]) == 1
    assert sorted(customers(db)) == [1]
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE customers DROP CONSTRAINT no_bob")
    engine.dispose()
    capsys.readouterr()
    assert main(["dlq", "replay"]) == 0
    assert "replayed 2 of 2 (upserted 2" in capsys.readouterr().out
    assert customers(db)[2] == ("Bob", "5551234567", EXPORT_US - MARGIN_US)
    assert customers(db)[3] == ("Bob", "5551234567", EXPORT_US)
    assert query(db, "SELECT _ddbcdc_event_id FROM ddbcdc_changes__customers") == [("0f3a",)]


def test_item_counts_are_checked(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = full_export(tmp_path / "export")
    manifest = (
        (folder / "manifest-files.json").read_text().replace('"itemCount":2', '"itemCount":3')
    )
    (folder / "manifest-files.json").write_text(manifest)
    assert main(["snapshot", "--from-export", str(folder), "--force"]) == 2
    assert "manifest-files.json counts 6 items, manifest-summary.json 5" in capsys.readouterr().err


def test_ion_and_missing_manifests_are_named(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ion = write_export(
        tmp_path / "ion",
        {"x.ion.gz": [b"$ion_1_0 {Item:{userid:1}}"]},
        export_id="01764000000123-ion00001",
        export_time_us=EXPORT_US,
        output_format="ION",
    )
    assert main(["snapshot", "--from-export", str(ion), "--force"]) == 2
    assert "is in ION format: ddbcdc imports DYNAMODB_JSON exports" in capsys.readouterr().err

    bare = tmp_path / "bare"
    (bare / "data").mkdir(parents=True)
    shutil.copy(full_export(tmp_path / "src") / "data" / "first.json.gz", bare / "data" / "a.gz")
    assert main(["snapshot", "--from-export", str(bare), "--force"]) == 2
    assert "no manifest-summary.json" in capsys.readouterr().err
    stamp = "2025-11-24T16:00:00.123Z"
    argv = ["snapshot", "--from-export", str(bare), "--export-time", stamp, "--force"]
    assert main(argv) == 0
    assert "has no manifests: data files are not checked" in capsys.readouterr().err
    assert customers(db)[2][2] == EXPORT_US - MARGIN_US


def test_an_export_below_the_prune_floor_is_refused_naming_both_times(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = sa.create_engine(db)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO ddbcdc_prune_state (target_table, floor_us, pruned_total) "
                "VALUES ('customers', :floor, 1)"
            ),
            {"floor": EXPORT_US},
        )
        hold(conn, "someone-else", EXPORT_US + 1, "customers")
    engine.dispose()
    assert main(["snapshot", "--from-export", str(full_export(tmp_path / "e")), "--force"]) == 2
    err = capsys.readouterr().err
    assert "2025-11-24T15:59:55.123000Z is at or below the tombstone prune floor" in err
    assert "(2025-11-24T16:00:00.123000Z)" in err and "DDBCDC_TOMBSTONE_HORIZON" in err
    assert customers(db) == {}
    assert query(db, "SELECT holder FROM ddbcdc_prune_holds") == [("someone-else",)]
    assert query(db, "SELECT count(*) FROM ddbcdc_snapshots") == [(0,)]


def test_failed_preconditions_refuse_without_force(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["snapshot", "--from-export", str(full_export(tmp_path / "e"))]) == 2
    err = capsys.readouterr().err
    assert "refused (aws): the checks could not run" in err
    assert "preconditions not met" in err
    assert customers(db) == {}


def test_a_killed_import_continues_at_its_last_committed_line(db: str, tmp_path: Path) -> None:
    count = 60_000
    folder = write_export(
        tmp_path / "big",
        {"only.json.gz": full_lines([customer(n, f"n{n}") for n in range(1, count + 1)])},
        export_id="01764000000123-big00001",
        export_time_us=EXPORT_US,
    )
    argv = [sys.executable, "-m", "ddbcdc.cli", "snapshot", "--from-export", str(folder)]
    argv += ["--force", "--no-progress", "--batch-size", "500"]
    log = tmp_path / "import.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(argv, env=os.environ.copy(), stderr=sink)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        done = query(db, "SELECT coalesce(sum(items), 0) FROM ddbcdc_snapshot_segments")[0][0]
        if done >= 2000:
            break
        time.sleep(0.02)
    assert process.poll() is None, log.read_text()
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    (line,) = query(db, "SELECT (position->>'line')::int FROM ddbcdc_snapshot_segments")[0]
    assert 2000 <= line < count  # stopped in the middle of the file
    assert query(db, "SELECT count(*) FROM customers")[0][0] == line

    assert main(["snapshot", "--from-export", str(folder), "--force", "--no-progress"]) == 0
    # Every line applied once: nothing before the committed line was read again.
    assert query(db, "SELECT items, done FROM ddbcdc_snapshot_segments") == [(count, True)]
    assert query(db, "SELECT count(*), count(DISTINCT _ddbcdc_version_us) FROM customers") == [
        (count, 1)
    ]


def test_rows_the_mapping_cannot_hold_are_dead_letters_naming_file_and_line(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_key = {"userid": {"S": "not a number"}, "first_name": {"S": "x"}}
    folder = write_export(
        tmp_path / "export",
        {
            "only.json.gz": [
                *full_lines([customer(1), bad_key, customer(3)]),
                b"this line is not JSON",
            ]
        },
        export_id="01764000000123-dead0001",
        export_time_us=EXPORT_US,
    )
    assert main(["snapshot", "--from-export", str(folder), "--force", "--no-progress"]) == 1
    assert "dead-lettered 2" in capsys.readouterr().out
    assert sorted(customers(db)) == [1, 3]
    letters = query(
        db,
        "SELECT stage, partition_key, error_path, payload, version_us FROM ddbcdc_dead_letters "
        "ORDER BY id",
    )
    assert [(x[0], x[1]) for x in letters] == [
        ("cleanse", "data/only.json.gz:2"),
        ("decode", "data/only.json.gz:4"),
    ]
    assert letters[0][2] == "dynamodb.NewImage.userid" and letters[0][4] == EXPORT_US - MARGIN_US
    assert b'"eventID":"export:01764000000123-dead0001:0:1"' in bytes(letters[0][3])
    assert bytes(letters[1][3]) == b"this line is not JSON"  # the exact line, kept


def test_restart_abandons_an_unfinished_backfill_and_releases_its_hold(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = full_export(tmp_path / "first")
    (first / "data" / "second.json.gz").write_bytes(b"damaged")
    assert main(["snapshot", "--from-export", str(first), "--force", "--no-progress"]) == 2
    other = full_export(tmp_path / "other", export_id="01764000000123-bbbb0002")
    assert main(["snapshot", "--from-export", str(other), "--force", "--no-progress"]) == 2
    assert "export:01764000000123-aaaa0001 of customers is unfinished" in capsys.readouterr().err
    argv = ["snapshot", "--from-export", str(other), "--force", "--no-progress", "--restart"]
    assert main(argv) == 0
    runs = query(db, "SELECT id, status FROM ddbcdc_snapshots ORDER BY started_at")
    assert runs == [
        ("export:01764000000123-aaaa0001", "abandoned"),
        ("export:01764000000123-bbbb0002", "done"),
    ]
    assert query(db, "SELECT count(*) FROM ddbcdc_prune_holds") == [(0,)]
    # The abandoned export, fetched again, is imported again from its start.
    full_export(tmp_path / "first")
    assert main(["snapshot", "--from-export", str(first), "--force", "--no-progress"]) == 0
    assert query(db, "SELECT status FROM ddbcdc_snapshots WHERE id LIKE '%aaaa0001'") == [("done",)]
    assert query(db, "SELECT sum(items) FROM ddbcdc_snapshot_segments") == [(10,)]
