"""Stream time over every shard of the stream, through PostgreSQL and ``ddbcdc status``.

The worker lists the stream's shards (:class:`~ddbcdc.worker.shards.ShardRegistry`, here with
a lister the test controls) and the shard processors apply batches (the real pipeline); the
prune floor and ``ddbcdc status`` read what they left in PostgreSQL.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from change_records import record
from ddbcdc.cli import main
from ddbcdc.pipeline import Pipeline, ShardPosition, SourceRecord
from ddbcdc.schema.mapping import load_mappings
from ddbcdc.worker.liveness import ProgressTouch
from ddbcdc.worker.shards import ShardRegistry

MAPPINGS = load_mappings(Path(__file__).resolve().parents[2] / "schemas" / "tables")
DAY = 86_400_000_000
SECOND = 1_000_000
T = 1_900_000_000_000_000
SENTINEL = 10**12
_seq = itertools.count(1000)


@pytest.fixture
def db(
    fresh_database: Callable[..., AbstractContextManager[str]], monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    with fresh_database("t_stream", mappings=MAPPINGS) as url:
        monkeypatch.setenv("DATABASE_URL", url)
        yield url


@pytest.fixture
def pipeline(db: str) -> Iterator[Pipeline]:
    p = Pipeline(
        engine=sa.create_engine(db),
        mappings=MAPPINGS,
        tombstone_horizon=timedelta(days=8),
        prune_every=timedelta(days=365),  # the tests prune when they say so
    )
    yield p
    p.close()


class Stream:
    """The stream's shards as the worker lists them."""

    def __init__(self, pipeline: Pipeline, *shards: str) -> None:
        self.shards = set(shards)
        self.registry = ShardRegistry(pipeline.engine, "app", [lambda: set(self.shards)])

    def list(self) -> None:
        assert self.registry.refresh()


def apply(p: Pipeline, shard: str, *changes: bytes) -> int:
    """Shard ``shard``'s processor applies a batch; how many were dead-lettered."""
    position = ShardPosition("app", shard, str(next(_seq)))
    records = [SourceRecord(c, shard_id=shard) for c in changes]
    return p.process(records, position=position).dead_lettered


def at(us: int) -> bytes:
    return record("MODIFY", {"userid": SENTINEL}, us, eid=f"pos-{next(_seq)}")


def status_json(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    capsys.readouterr()
    main(["status", "--json"])
    document: dict[str, object] = json.loads(capsys.readouterr().out)
    return document


def stream_time(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    [found] = status_json(capsys)["stream_times"]  # type: ignore[misc]
    assert isinstance(found, dict)
    return found


def test_a_shard_that_has_not_started_stops_pruning_until_it_has(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    """Shard A deletes key 1 at T-9d and moves on to T; shard B (retention above 8 days) has
    not started. B's first INSERT of key 2 at T-12d must be applied, not refused."""
    stream = Stream(pipeline, "A", "B")
    stream.list()
    delete = record("REMOVE", {"userid": 1}, T - 9 * DAY, eid="del-1")
    assert apply(pipeline, "A", delete, at(T)) == 0
    assert pipeline.prune_tombstones() == 0  # B could still bring anything
    found = stream_time(capsys)
    assert found["not_started"] == ["B"] and found["current"] is False
    assert found["why_not_current"] == "shard B of app has not started"

    first = record("INSERT", {"userid": 2}, T - 12 * DAY, image={"first_name": "Old"}, eid="i2")
    assert apply(pipeline, "B", first) == 0
    with pipeline.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT first_name FROM customers WHERE userid = 2")).scalar()
    assert apply(pipeline, "B", at(T)) == 0
    stream.list()
    assert pipeline.prune_tombstones() == 1  # both at T: key 1's tombstone may go now
    assert stream_time(capsys)["stream_time"] == "2030-03-17T17:46:40+00:00"


def test_stream_time_never_moves_back_when_a_child_shard_starts(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    stream = Stream(pipeline, "parent", "other")
    stream.list()
    apply(pipeline, "parent", at(T))
    apply(pipeline, "other", at(T + 60 * SECOND))
    stream.list()
    assert stream_time(capsys)["stream_time"] == "2030-03-17T17:46:40+00:00"  # T
    # The reshard: the parent is read to its end, the child is listed and not started yet.
    stream.shards = {"child", "other"}
    pipeline.end_shard("app", "parent")
    stream.list()
    found = stream_time(capsys)
    assert (found["stream_time"], found["current"]) == ("2030-03-17T17:46:40+00:00", False)
    # The child's first change was made 3 s before the parent's last one (delivered late):
    # the oldest position dips, the stream time stays.
    apply(pipeline, "child", at(T - 3 * SECOND))
    stream.list()
    found = stream_time(capsys)
    assert (found["stream_time"], found["current"]) == ("2030-03-17T17:46:40+00:00", True)
    apply(pipeline, "child", at(T + 30 * SECOND))
    stream.list()
    assert stream_time(capsys)["stream_time"] == "2030-03-17T17:47:10+00:00"  # T + 30 s


def test_listing_adds_not_started_rows_and_drops_those_that_went_away(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    stream = Stream(pipeline, "a", "b", "gone")
    stream.list()
    apply(pipeline, "a", at(T))
    touch = ProgressTouch(pipeline.engine, "app", every_s=0.0)
    assert touch("b", 0)  # caught up before its first record: started, at the present
    pipeline.end_shard("app", "closed-early")  # ended before it was ever listed
    stream.shards = {"a", "b", "closed-early"}
    stream.list()
    shards = {s["shard_id"]: s for s in status_json(capsys)["shards"]}  # type: ignore[attr-defined]
    assert set(shards) == {"a", "b", "closed-early"}  # "gone" never started: dropped
    assert shards["closed-early"]["state"] == "ended"
    assert shards["b"]["sequence_number"] is None and shards["b"]["state"] == "ok"
    now = datetime.now(UTC)
    b_time = datetime.fromisoformat(shards["b"]["stream_time"])
    assert abs((now - b_time).total_seconds()) < 60
    stream.shards = {"a", "b", "new"}
    stream.list()
    capsys.readouterr()
    assert main(["status"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == [
        "APPLICATION", "SHARD", "STATE", "RECORDS", "BATCHES", "BEHIND_MS", "AGE_S",
        "STREAM_TIME", "SEQUENCE",
    ]  # fmt: skip
    rows = {line.split()[1]: line.split() for line in out[1:5]}
    assert rows["a"][7] == "2030-03-17T17:46:40+00:00"
    assert rows["new"][2] == "not_started" and rows["new"][7:] == ["-", "-"]
    [line] = [x for x in out if x.startswith("stream time of app: ")]
    assert line == (
        f"stream time of app: {shards['b']['stream_time']} "
        "(not advancing: shard new of app has not started)"
    )  # b, at the present, is older than a


def test_freshness_per_table_is_stored_with_the_batch_and_shown(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    now_us = int(datetime.now(UTC).timestamp() * 1_000_000)
    made = now_us - 2 * SECOND
    insert = record("INSERT", {"userid": 7}, made, image={"first_name": "x"}, eid="f1")
    apply(pipeline, "s1", insert, record("MODIFY", {"userid": 8}, made - DAY, eid="f2"))
    apply(pipeline, "s2", record("MODIFY", {"userid": 9}, made - SECOND, eid="f3"))
    [table] = status_json(capsys)["tables"]  # type: ignore[misc]
    assert table["target_table"] == "customers"
    assert datetime.fromisoformat(table["newest_change"]) == datetime.fromtimestamp(made / 1e6, UTC)
    assert 2.0 <= table["write_to_commit_s"] < 30
    assert 2.0 <= table["newest_change_age_s"] < 30
    capsys.readouterr()
    main(["status"])
    out = capsys.readouterr().out
    assert "newest change of customers: " in out and "s after it was made" in out
