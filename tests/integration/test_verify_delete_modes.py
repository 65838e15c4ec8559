"""Verify, repair and snapshot with rows kept for deleted items (moto, a real PostgreSQL).

A mapping with soft deletes and TTL expiries kept: a soft-deleted or kept row whose item
DynamoDB no longer holds is no drift and no repair touches it; a snapshot does not bring it
back (the scan does not see its item) unless the item exists again, and then the snapshot's
newer INSERT clears the mark as any INSERT does; a live row the copy should not hold any more
is repaired with a REMOVE of unknown cause, which keeps the row as an archive.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
import sqlalchemy as sa

from backfill_support import BackfillTable, backfill_table, rich_item
from change_records import record
from ddbcdc.backfill.records import now_us
from ddbcdc.cli import main
from ddbcdc.decode.attributes import unmarshal
from ddbcdc.local.stack import LocalStack
from ddbcdc.pipeline import Pipeline, SourceRecord
from ddbcdc.verify.compare import compare

MODES = {"deletes": "soft", "ttl_deletes": "keep"}


@pytest.fixture
def table(
    local_stack: LocalStack,
    fresh_database: Callable[..., AbstractContextManager[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[BackfillTable]:
    with backfill_table(
        local_stack, fresh_database, tmp_path, monkeypatch=monkeypatch, modes=MODES
    ) as made:
        monkeypatch.delenv("DDBCDC_STREAM_NAME", raising=False)  # no stream: a static copy
        monkeypatch.setenv("DDBCDC_CLOCK_SKEW_MARGIN", "PT0S")  # one clock: rows at read time
        made.put([rich_item(n, f"name{n}") for n in range(1, 21)])
        assert main(["snapshot", "--force", "--no-progress"]) == 0
        yield made


def verify(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, object]:
    capsys.readouterr()
    code = main(["verify", "--json", "--no-progress", "--segments", "2", *args])
    report = json.loads(capsys.readouterr().out)
    assert code == (1 if report["drift"] else 0)
    return report


def remove(table: BackfillTable, userid: int, *, ttl: bool, us: int) -> None:
    """Remove the item from DynamoDB and apply the REMOVE the stream would bring."""
    key = {"userid": {"N": str(userid)}}
    item = table.client().get_item(TableName=table.name, Key=key)["Item"]
    table.client().delete_item(TableName=table.name, Key=key)
    data = record(
        "REMOVE",
        {"userid": userid},
        us,
        eid=f"r{userid}",
        table=table.name,
        old_image=unmarshal(item),
        ttl=ttl,
    )
    pipeline = Pipeline(engine=sa.create_engine(table.database_url), mappings=[table.mapping])
    assert pipeline.process([SourceRecord(data)]).deleted == 1
    pipeline.close()


def kept(table: BackfillTable) -> dict[int, bool]:
    """The rows of items that are gone: userid -> marked."""
    versions = f'"ddbcdc_versions__{table.name}"'
    return dict(
        table.query(
            f'SELECT t.userid, t._ddbcdc_deleted_at IS NOT NULL FROM "{table.name}" t '
            f"JOIN {versions} v USING (userid) WHERE v._ddbcdc_deleted ORDER BY 1"
        )
    )


def test_rows_of_deleted_items_are_no_drift_and_no_repair_or_snapshot_touches_them(
    table: BackfillTable, capsys: pytest.CaptureFixture[str]
) -> None:
    remove(table, 3, ttl=False, us=now_us())  # soft: marked
    remove(table, 4, ttl=True, us=now_us())  # kept, unmarked
    assert kept(table) == {3: True, 4: False}
    report = verify(capsys, "--repair")
    assert report["drift"] is False and report["items"] == 18 and report["rows"] == 18
    assert report["suspects"] == 0 and report["repaired"] == 0
    assert compare(table.client(), sa.create_engine(table.database_url), table.mapping).matches

    assert main(["snapshot", "--force", "--no-progress"]) == 0
    assert kept(table) == {3: True, 4: False}  # the scan did not see them: they stay

    table.put([rich_item(3, "back")])  # the item exists again, no stream brings it
    report = verify(capsys)
    assert (report["missing"], report["extra"]) == (1, 0)
    assert main(["snapshot", "--force", "--no-progress"]) == 0  # a newer INSERT: unmarked
    assert kept(table) == {4: False}
    assert table.query(f'SELECT first_name FROM "{table.name}" WHERE userid = 3') == [("back",)]
    assert verify(capsys)["drift"] is False


def test_a_repair_of_a_missed_remove_keeps_the_row_as_an_archive(
    table: BackfillTable, capsys: pytest.CaptureFixture[str]
) -> None:
    """The copy missed a REMOVE: the row is extra. A repair cannot know whether a user or the
    TTL removed the item, so it takes the mode that keeps more (here: keep)."""
    table.client().delete_item(TableName=table.name, Key={"userid": {"N": "5"}})
    report = verify(capsys, "--repair")
    assert (report["extra"], report["repaired"]) == (1, 1)
    assert kept(table) == {5: False}
    assert verify(capsys)["drift"] is False


def test_a_live_row_marked_deleted_is_different_and_repaired(
    table: BackfillTable, capsys: pytest.CaptureFixture[str]
) -> None:
    """With expiries kept, a live row is told by its versions row, not its mark: a live item's
    row that says it was deleted (a copy changed in SQL) differs from the item all the same."""
    table.execute(f'UPDATE "{table.name}" SET _ddbcdc_deleted_at = now() WHERE userid = 6')
    report = verify(capsys, "--repair")
    assert (report["different"], report["repaired"]) == (1, 1)
    marked = f'SELECT count(*) FROM "{table.name}" WHERE _ddbcdc_deleted_at IS NOT NULL'
    assert table.query(marked) == [(0,)]
    assert verify(capsys)["drift"] is False
