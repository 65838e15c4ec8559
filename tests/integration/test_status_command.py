"""``ddbcdc status`` against a real PostgreSQL: per-shard progress, lag, missing migrations."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa

from ddbcdc.cli import main
from ddbcdc.migrate.run import upgrade
from ddbcdc.pipeline import Pipeline, ShardPosition, SourceRecord
from ddbcdc.schema.bookkeeping import mapping_versions
from ddbcdc.schema.mapping import load_mappings, mapping_digest, mapping_document
from ddbcdc.worker.liveness import ProgressTouch
from shop_records import image, record, shop_mapping

MAPPINGS = load_mappings(Path(__file__).resolve().parents[2] / "schemas" / "tables")


@pytest.fixture
def empty_db(
    fresh_database: Callable[..., AbstractContextManager[str]], monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    with fresh_database("t_status") as url:
        monkeypatch.setenv("DATABASE_URL", url)
        yield url


def test_missing_table_says_to_migrate(empty_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status"]) == 2
    assert "run `ddbcdc migrate`" in capsys.readouterr().err


def test_progress_per_shard_as_table_and_json(
    empty_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = sa.create_engine(empty_db)
    upgrade(engine, MAPPINGS)
    assert main(["status"]) == 1
    assert "no shard progress yet" in capsys.readouterr().out

    pipeline = Pipeline(engine=engine, mappings=MAPPINGS)
    for app, shard, seq, behind in [
        ("app", "shardId-000000000000", "100", 1500),
        ("app", "shardId-000000000000", "105", 20),
        ("app", "shardId-000000000001", "200", None),
        ("other", "shardId-000000000000", "7", 0),
    ]:
        pipeline.process([], position=ShardPosition(app, shard, seq, behind))
    pipeline.close()

    assert main(["status", "--application-name", "app"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == [
        "APPLICATION", "SHARD", "STATE", "RECORDS", "BATCHES", "BEHIND_MS", "AGE_S",
        "STREAM_TIME", "SEQUENCE",
    ]  # fmt: skip
    assert out[1].split()[:6] == ["app", "shardId-000000000000", "ok", "0", "2", "20"]
    assert out[1].split()[-2:] == ["-", "105"]  # no change applied: no stream time
    assert out[2].split()[5] == "-"
    assert out[3:] == [
        "stream time of app: unknown (not advancing: the shards of app were never listed)"
    ]

    assert main(["status", "--json"]) == 0
    shards = json.loads(capsys.readouterr().out)["shards"]
    assert [(s["application"], s["shard_id"], s["sequence_number"]) for s in shards] == [
        ("app", "shardId-000000000000", "105"),
        ("app", "shardId-000000000001", "200"),
        ("other", "shardId-000000000000", "7"),
    ]
    assert all(0 <= s["seconds_since_update"] < 60 for s in shards)
    assert shards[0]["batches_total"] == 2


def test_a_shard_not_called_for_longer_than_the_threshold_is_stalled(
    empty_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = sa.create_engine(empty_db)
    upgrade(engine, MAPPINGS)
    pipeline = Pipeline(engine=engine, mappings=MAPPINGS)
    for shard in ("shardId-000000000000", "shardId-000000000001"):
        pipeline.process([], position=ShardPosition("app", shard, "100", 0))
    pipeline.close()
    # The processor of shard 0 went on being called (an empty batch touches the row); the
    # other was last called 90 s ago, when MillisBehindLatest was 0.
    touch = ProgressTouch(engine, "app", every_s=5.0)
    assert touch("shardId-000000000000", 0)
    assert not touch("shardId-000000000000", 0)  # at most every 5 s
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE ddbcdc_shard_progress SET updated_at = now() - interval '90 seconds' "
                "WHERE shard_id = 'shardId-000000000001'"
            )
        )
    engine.dispose()

    assert main(["status", "--stall-after", "60"]) == 3
    out = capsys.readouterr().out.splitlines()
    fresh, stalled = (line.split() for line in out[1:3])
    assert fresh[2] == "ok" and fresh[5] == "0"
    assert stalled[2] == "stalled"
    assert stalled[5] == "-"  # not the stale 0 ms
    assert float(stalled[6]) >= 90

    assert main(["status", "--json", "--stall-after", "120"]) == 0
    shards = json.loads(capsys.readouterr().out)["shards"]
    assert [s["stalled"] for s in shards] == [False, False]


def test_ended_shards_stream_time_and_pruning_are_shown(
    empty_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from change_records import record
    from ddbcdc.materialize.prune import hold
    from ddbcdc.pipeline import SourceRecord

    engine = sa.create_engine(empty_db)
    upgrade(engine, MAPPINGS)
    pipeline = Pipeline(engine=engine, mappings=MAPPINGS)
    us = 1_700_000_000_000_000
    change = record("INSERT", {"userid": 1}, us, eid="e1")
    pipeline.process([SourceRecord(change)], position=ShardPosition("app", "s-old", "9"))
    pipeline.process([SourceRecord(change)], position=ShardPosition("app", "s-new", "10"))
    pipeline.end_shard("app", "s-old")
    with engine.begin() as conn:
        hold(conn, "snapshot:x", us, "customers")
    pipeline.close()
    assert main(["status", "--json", "--stall-after", "0"]) == 3  # s-new is not called
    report = json.loads(capsys.readouterr().out)
    states = {s["shard_id"]: (s["state"], s["stalled"]) for s in report["shards"]}
    assert states == {"s-old": ("ended", False), "s-new": ("stalled", True)}
    assert report["shards"][0]["stream_time"] == "2023-11-14T22:13:20+00:00"
    assert report["prune_holds"][0]["holder"] == "snapshot:x"
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "pruning of customers held from 2023-11-14T22:13:20+00:00 by snapshot:x" in out
    engine.dispose()


def test_unmatched_items_per_routed_mapping(
    empty_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """In the catch-all table, or (without one) as pending dead letters."""
    shop = shop_mapping()
    off = replace(
        shop, target_table="shop_off", routes=tuple(r for r in shop.routes if not r.catch_all)
    )
    engine = sa.create_engine(empty_db)
    upgrade(engine, (shop,))
    cart = ("CUSTOMER#1", "ORDER#2024-05-01#1")
    carts = [record("INSERT", cart, 1_700_000_000_000_000, eid="a", item=image(cart, "cart", "c"))]
    other = ("NOTE#1", "X")
    carts.append(
        record("INSERT", other, 1_700_000_000_000_000, eid="b", item=image(other, "x", "n"))
    )
    pipeline = Pipeline(engine=engine, mappings=[shop])
    assert pipeline.process([SourceRecord(r) for r in carts]).unmatched == {"shop": 2}
    pipeline.close()
    with engine.begin() as conn:  # another mapping of the table, without a catch-all
        conn.execute(
            sa.insert(mapping_versions).values(
                target_table="shop_off",
                version=1,
                digest=mapping_digest(off),
                mapping=mapping_document(off),
            )
        )
    pipeline = Pipeline(engine=engine, mappings=[off])
    result = pipeline.process([SourceRecord(r) for r in carts])
    assert (result.dead_lettered, result.unmatched) == (2, {"shop_off": 2})
    pipeline.close()
    engine.dispose()
    capsys.readouterr()
    main(["status"])
    out = capsys.readouterr().out
    assert "unmatched items of shop: 2 in shop_unmatched" in out
    assert "unmatched items of shop_off: 2 in dead letters (no catch-all)" in out
    main(["status", "--json"])
    found = json.loads(capsys.readouterr().out)["unmatched"]
    assert found == [
        {"mapping": "shop", "catch_all": "shop_unmatched", "unmatched": 2},
        {"mapping": "shop_off", "catch_all": None, "unmatched": 2},
    ]


def test_a_shard_whose_batch_is_working_is_busy_not_stalled(
    empty_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import threading
    import time

    from change_records import record as change
    from ddbcdc.db import name_sessions
    from ddbcdc.materialize.shard_states import session_name

    engine = sa.create_engine(empty_db)
    upgrade(engine, MAPPINGS)
    shard = "shardId-000000000001"
    pipeline = Pipeline(engine=engine, mappings=MAPPINGS)
    pipeline.process([], position=ShardPosition("app", shard, "100", 0))
    with engine.begin() as conn:  # its last batch committed 90 s ago
        conn.execute(
            sa.text("UPDATE ddbcdc_shard_progress SET updated_at = now() - interval '90 seconds'")
        )
    # The shard's next batch waits for a lock another transaction holds on its table.
    worker = sa.create_engine(empty_db)
    name_sessions(worker, session_name("app", shard))
    blocked = Pipeline(engine=worker, mappings=MAPPINGS)
    batch = [SourceRecord(change("INSERT", {"userid": 1}, 1_700_000_000_000_000, eid="e1"))]
    holder = engine.connect()
    holder.begin()
    holder.execute(sa.text("LOCK TABLE customers IN EXCLUSIVE MODE"))
    running = threading.Thread(
        target=blocked.process,
        args=(batch,),
        kwargs={"position": ShardPosition("app", shard, "101", 0)},
    )
    running.start()
    try:
        deadline = time.monotonic() + 30
        waiting = sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND application_name LIKE 'ddbcdc %'"
        )
        with engine.connect() as conn:
            # pg_stat_activity is read once a transaction: one transaction per look.
            while conn.execute(waiting).scalar_one() == 0:
                conn.rollback()
                assert running.is_alive(), "the batch ended without waiting for the lock"
                assert time.monotonic() < deadline, "the batch never waited for the lock"
                time.sleep(0.1)
        assert main(["status", "--json", "--stall-after", "60"]) == 0
        [report] = json.loads(capsys.readouterr().out)["shards"]
        assert (report["state"], report["stalled"]) == ("busy", False)
        assert report["busy_since"] is not None
        # The table says so too.
        assert main(["status", "--application-name", "app", "--stall-after", "60"]) == 0
        assert capsys.readouterr().out.splitlines()[1].split()[2] == "busy"
    finally:
        holder.rollback()
        holder.close()
        running.join(timeout=30)
    assert main(["status", "--json", "--stall-after", "60"]) == 0
    [report] = json.loads(capsys.readouterr().out)["shards"]
    assert report["state"] == "ok" and report["sequence_number"] == "101"

    # A session of the shard idle in its transaction for longer than the threshold is not
    # working: the shard is stalled again.
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE ddbcdc_shard_progress SET updated_at = now() - interval '90 seconds'")
        )
    with worker.connect() as idle:
        idle.begin()
        idle.execute(sa.text("SELECT 1"))
        assert main(["status", "--json", "--stall-after", "60"]) == 0  # idle for < 60 s
        assert json.loads(capsys.readouterr().out)["shards"][0]["state"] == "busy"
        time.sleep(1.5)
        assert main(["status", "--json", "--stall-after", "1"]) == 3
        assert json.loads(capsys.readouterr().out)["shards"][0]["state"] == "stalled"
        idle.rollback()
    for each in (blocked, pipeline):
        each.close()
    engine.dispose()


def test_a_shard_whose_long_batch_just_committed_is_ok_not_stalled(
    empty_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The progress row says when the batch ended, not when its transaction began: a batch
    longer than the threshold is not shown stalled the moment it has committed."""
    import threading
    import time

    from change_records import record as change

    engine = sa.create_engine(empty_db)
    upgrade(engine, MAPPINGS)
    pipeline = Pipeline(engine=engine, mappings=MAPPINGS)
    batch = [SourceRecord(change("INSERT", {"userid": 1}, 1_700_000_000_000_000, eid="e1"))]
    holder = engine.connect()
    holder.begin()
    holder.execute(sa.text("LOCK TABLE customers IN EXCLUSIVE MODE"))
    position = ShardPosition("app", "shardId-000000000001", "101", 0)
    running = threading.Thread(
        target=pipeline.process, args=(batch,), kwargs={"position": position}
    )
    running.start()
    time.sleep(2.5)  # the batch waits for the lock: a batch longer than the threshold
    holder.rollback()
    holder.close()
    running.join(timeout=30)
    assert main(["status", "--json", "--stall-after", "2"]) == 0
    [report] = json.loads(capsys.readouterr().out)["shards"]
    assert (report["state"], report["sequence_number"]) == ("ok", "101")
    pipeline.close()
    engine.dispose()


def test_a_session_name_fits_postgresql_and_tells_shards_apart() -> None:
    from ddbcdc.materialize.shard_states import session_name, session_tag

    long_shard = "shardId-00000001536019433242-a1b2c3d4" + "x" * 40
    for app, shard in [("app", "shardId-000000000001"), ("a" * 200, long_shard)]:
        name = session_name(app, shard)
        assert len(name.encode()) <= 63 and name.startswith(session_tag(app, shard))
    assert session_tag("app", "s1") != session_tag("app", "s2")
    assert session_tag("app", "s1") != session_tag("app2", "s1")
