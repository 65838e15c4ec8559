"""Tombstone pruning in stream time, holds, dead letters, and the floor that keeps it safe.

Stream time is driven by the test: shard positions come from batches of records whose change
times the test chooses (``advance``), never from the wall clock.
"""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from change_records import generate_history, record
from ddbcdc.materialize import REFUSED_BELOW_FLOOR
from ddbcdc.materialize.progress import register_shards
from ddbcdc.materialize.prune import hold, release
from ddbcdc.pipeline import Pipeline, ShardPosition, SourceRecord
from ddbcdc.schema.bookkeeping import shard_progress, stream_time
from ddbcdc.schema.mapping import load_mappings
from ddbcdc.schema.tables import mapped_tables

ROOT = Path(__file__).resolve().parents[2]
MAPPINGS_DIR = ROOT / "schemas" / "tables"
MAPPINGS = load_mappings(MAPPINGS_DIR)
TABLES = mapped_tables(MAPPINGS)["customers"]
DAY = 86_400_000_000
T = 1_900_000_000_000_000  # "now" in stream time, as the test decides
SENTINEL = 10**12  # a key of its own for the records that move shard positions
_seq = itertools.count(1000)


@pytest.fixture
def db(fresh_database: Callable[..., AbstractContextManager[str]]) -> Iterator[str]:
    with fresh_database("t_prune", mappings=MAPPINGS) as url:
        yield url


@pytest.fixture
def pipeline(db: str) -> Iterator[Pipeline]:
    p = Pipeline(
        engine=sa.create_engine(db),
        mappings=MAPPINGS,
        tombstone_horizon=timedelta(days=1),
        prune_every=timedelta(days=365),  # the tests prune when they say so
    )
    yield p
    p.close()


def advance(p: Pipeline, shard: str, us: int) -> None:
    """Shard ``shard`` applies a batch whose newest change is at ``us``; the worker has
    listed it (with the shards listed before)."""
    change = record("MODIFY", {"userid": SENTINEL}, us, eid=f"pos-{next(_seq)}")
    position = ShardPosition("app", shard, str(next(_seq)))
    p.process([SourceRecord(change, shard_id=shard)], position=position)
    with p.engine.begin() as conn:
        known = conn.execute(
            sa.select(shard_progress.c.shard_id).where(shard_progress.c.application == "app")
        ).scalars()
        register_shards(conn, "app", {*known, shard})


def remove(p: Pipeline, userid: int, us: int) -> None:
    p.process([SourceRecord(record("REMOVE", {"userid": userid}, us, eid=f"r{userid}-{us}"))])


def insert(p: Pipeline, userid: int, us: int, name: str = "x") -> int:
    """Apply an INSERT; how many records were dead-lettered."""
    change = record("INSERT", {"userid": userid}, us, image={"first_name": name}, eid=f"i{us}")
    return p.process([SourceRecord(change)]).dead_lettered


def tombstones(p: Pipeline) -> set[int]:
    ver = TABLES.versions
    with p.engine.connect() as conn:
        query = sa.select(ver.c.userid).where(ver.c._ddbcdc_deleted)
        return set(conn.execute(query).scalars())


def live(p: Pipeline) -> dict[int, str]:
    with p.engine.connect() as conn:
        rows = conn.execute(sa.select(TABLES.live.c.userid, TABLES.live.c.first_name)).all()
    return {k: v for k, v in rows if k != SENTINEL}


def test_nothing_is_pruned_without_stream_time(pipeline: Pipeline) -> None:
    remove(pipeline, 1, 0)  # deleted in 1970: still nothing may prune it
    assert pipeline.prune_tombstones() == 0 and tombstones(pipeline) == {1}
    with pipeline.engine.begin() as conn:  # a shard whose stream time is unknown holds it too
        conn.execute(
            sa.insert(shard_progress).values(
                application="app",
                shard_id="legacy",
                sequence_number="1",
                records_total=0,
                batches_total=0,
            )
        )
    advance(pipeline, "s1", T)
    assert pipeline.prune_tombstones() == 0 and tombstones(pipeline) == {1}


def test_pruning_follows_the_slowest_shard_and_ignores_ended_ones(pipeline: Pipeline) -> None:
    remove(pipeline, 1, T - 20 * DAY)
    remove(pipeline, 2, T - 5 * DAY)
    remove(pipeline, 3, T)
    advance(pipeline, "s1", T)
    advance(pipeline, "s2", T - 10 * DAY)
    assert pipeline.prune_tombstones() == 1  # cutoff: (T - 10 days) - 1 day
    assert tombstones(pipeline) == {2, 3}
    advance(pipeline, "s3", T - 30 * DAY)
    pipeline.end_shard("app", "s3")  # an ended shard brings nothing more
    advance(pipeline, "s2", T)
    assert pipeline.prune_tombstones() == 1 and tombstones(pipeline) == {3}
    with pipeline.engine.connect() as conn:
        floor = conn.execute(sa.text("SELECT floor_us FROM ddbcdc_prune_state")).scalar()
    assert floor == T - 5 * DAY  # the newest version pruned


def test_tombstones_within_the_horizon_of_stream_time_are_kept(pipeline: Pipeline) -> None:
    remove(pipeline, 1, T - DAY - 1)
    remove(pipeline, 2, T - DAY)  # the horizon is one day: a change this old may still come
    remove(pipeline, 3, T - 1)
    advance(pipeline, "s1", T)
    assert pipeline.prune_tombstones() == 1 and tombstones(pipeline) == {2, 3}


def test_a_late_shard_batch_does_not_move_its_position_back(pipeline: Pipeline) -> None:
    change = record("MODIFY", {"userid": SENTINEL}, T, eid="late-a")
    pipeline.process([SourceRecord(change)], position=ShardPosition("app", "s1", "400", 0))
    older = record("MODIFY", {"userid": SENTINEL}, T - DAY, eid="late-b")
    # A processor that lost its lease commits an older batch after the new owner's.
    pipeline.process([SourceRecord(older)], position=ShardPosition("app", "s1", "300", 9))
    with pipeline.engine.connect() as conn:
        row = conn.execute(sa.select(shard_progress)).one()
    assert (row.sequence_number, row.max_version_us, row.millis_behind_latest) == ("400", T, 0)
    assert (row.records_total, row.batches_total) == (2, 2)


def test_holds_and_pending_dead_letters_keep_tombstones(pipeline: Pipeline) -> None:
    remove(pipeline, 1, T - 20 * DAY)
    remove(pipeline, 2, T - 12 * DAY)
    advance(pipeline, "s1", T)
    with pipeline.engine.begin() as conn:
        hold(conn, "snapshot:test", T - 15 * DAY, "customers")
        hold(conn, "import:all", T - 30 * DAY, None)  # every table
    assert pipeline.prune_tombstones() == 0
    with pipeline.engine.begin() as conn:
        release(conn, "import:all")
    assert pipeline.prune_tombstones() == 1 and tombstones(pipeline) == {2}
    # A record of 25 days ago that does not fit: pending, it keeps what its replay needs.
    bad = record("INSERT", {"userid": 5}, T - 25 * DAY, image={"phone": True}, eid="bad")
    assert pipeline.process([SourceRecord(bad)]).dead_lettered == 1
    with pipeline.engine.begin() as conn:
        release(conn, "snapshot:test")
    assert pipeline.prune_tombstones() == 0 and tombstones(pipeline) == {2}
    with pipeline.engine.begin() as conn:
        conn.execute(sa.text("UPDATE ddbcdc_dead_letters SET discarded_at = now()"))
    assert pipeline.prune_tombstones() == 1 and tombstones(pipeline) == set()


H = T - 20 * DAY  # a hold's version in the holds tests


def floor(p: Pipeline) -> int | None:
    with p.engine.connect() as conn:
        return conn.execute(sa.text("SELECT floor_us FROM ddbcdc_prune_state")).scalar()


@pytest.mark.parametrize(
    ("holds", "kept"),
    [
        ([("snapshot:t", H, "customers")], {2, 3}),
        ([("import:all", H, None)], {2, 3}),
        ([("snapshot:other", H, "orders")], set()),
        ([("a", H + DAY, "customers"), ("b", H, None)], {2, 3}),
        ([("a", H, "customers"), ("b", H + DAY, None)], {2, 3}),
        ([("a", H, "customers"), ("a", H + 2 * DAY, "customers")], {2, 3}),
    ],
    ids=["this table", "every table", "another table", "lowest", "lowest too", "never raised"],
)
def test_a_hold_keeps_every_tombstone_at_or_above_its_version(
    pipeline: Pipeline, holds: list[tuple[str, int, str | None]], kept: set[int]
) -> None:
    """Stream time is far past them all: only the holds of this table (or of every table)
    decide, the lowest one, and holding again never raises a hold."""
    remove(pipeline, 1, H - 1)
    remove(pipeline, 2, H)
    remove(pipeline, 3, H + 1)
    advance(pipeline, "s1", T)
    with pipeline.engine.begin() as conn:
        for holder, version, target in holds:
            hold(conn, holder, version, target)
    assert pipeline.prune_tombstones() == 3 - len(kept)
    assert tombstones(pipeline) == kept
    assert floor(pipeline) == (H - 1 if kept else H + 1)  # the newest version pruned
    with pipeline.engine.begin() as conn:
        for holder, _, _ in holds:
            release(conn, holder)
    assert pipeline.prune_tombstones() == len(kept) and tombstones(pipeline) == set()
    assert floor(pipeline) == H + 1


def test_the_floor_never_moves_down(pipeline: Pipeline) -> None:
    insert(pipeline, 9, H - 5, "old")  # a live row: its versions row is no tombstone
    remove(pipeline, 2, H)
    advance(pipeline, "s1", T)
    assert pipeline.prune_tombstones() == 1 and floor(pipeline) == H
    remove(pipeline, 9, H - 3)  # newer than its row, older than the floor: a tombstone
    assert tombstones(pipeline) == {9}
    assert pipeline.prune_tombstones() == 1 and floor(pipeline) == H


def test_at_the_floor_a_change_of_a_key_without_a_version_is_refused(pipeline: Pipeline) -> None:
    remove(pipeline, 2, H)
    advance(pipeline, "s1", T)
    assert pipeline.prune_tombstones() == 1 and floor(pipeline) == H
    assert insert(pipeline, 5, H, "at the floor") == 1  # a pruned delete may be as new
    assert insert(pipeline, 6, H + 1, "above") == 0
    remove(pipeline, 7, H)  # nothing to delete, and no tombstone claiming the floor's version
    assert live(pipeline) == {6: "above"} and tombstones(pipeline) == set()


def test_after_pruning_old_writes_are_refused_never_resurrected(pipeline: Pipeline) -> None:
    insert(pipeline, 1, T - 40 * DAY, "before")
    remove(pipeline, 1, T - 20 * DAY)
    advance(pipeline, "s1", T)
    assert pipeline.prune_tombstones() == 1 and tombstones(pipeline) == set()
    # Older than the pruned delete: it must not come back. It cannot be told apart from an
    # INSERT of a key never seen, so both are refused, with a reason, and kept.
    assert insert(pipeline, 1, T - 30 * DAY, "zombie") == 1
    assert insert(pipeline, 2, T - 30 * DAY, "unknown") == 1
    assert live(pipeline) == {}
    with pipeline.engine.connect() as conn:
        errors = conn.execute(sa.text("SELECT DISTINCT error FROM ddbcdc_dead_letters")).scalars()
        assert list(errors) == [REFUSED_BELOW_FLOOR]
    # An old delete of a key without a row has nothing to do, and leaves no tombstone that
    # would claim a version older than the pruned one (and let an older INSERT win).
    remove(pipeline, 1, T - 35 * DAY)
    assert insert(pipeline, 1, T - 32 * DAY, "zombie") == 1
    assert insert(pipeline, 4, T - 10 * DAY, "newer") == 0  # above the floor: exact again
    assert live(pipeline) == {4: "newer"} and tombstones(pipeline) == set()


# -- the property: any age, any order, pruning in between -----------------------------------


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.integers(0, 2**32 - 1),
    # 1975, 1990, 2000, 2023 (in microseconds; "auto" reads values below 1e14, before
    # March 1973, as milliseconds, see DDBCDC_TIMESTAMP_UNIT).
    start=st.sampled_from(
        [157_766_400_000_000, 631_152_000_000_000, 946_684_800_000_000, 1_672_531_200_000_000]
    ),
    cuts=st.lists(st.integers(1, 80), max_size=4),
    prune_at=st.sets(st.integers(0, 4), max_size=3),
)
def test_any_age_and_order_converges_with_pruning_between_batches(
    pipeline: Pipeline, seed: int, start: int, cuts: list[int], prune_at: set[int]
) -> None:
    """Changes from 1975, 1990, 2000 or 2023, delivered shuffled and twice, in batches with
    prunes between them (stream time far ahead): no deleted item is alive, and every item
    is exact unless one of its changes was refused and kept as a dead letter."""
    with pipeline.engine.begin() as conn:
        for table in (*TABLES.all, shard_progress, stream_time):
            conn.execute(sa.delete(table))
        conn.execute(sa.text("DELETE FROM ddbcdc_dead_letters"))
        conn.execute(sa.text("DELETE FROM ddbcdc_prune_state"))
    rng = random.Random(seed)
    history = generate_history(rng, keys=range(5), steps=60, start_us=start, prefix="p")
    stream = history.delivery(rng)
    advance(pipeline, "s1", start + 3650 * DAY)  # a worker ten years ahead
    bounds = sorted({min(c, len(stream)) for c in cuts})
    for index, (a, b) in enumerate(itertools.pairwise([0, *bounds, len(stream)])):
        if index in prune_at:
            pipeline.prune_tombstones()
        result = pipeline.process([SourceRecord(r) for r in stream[a:b]])
        assert result.received == result.upserted + result.deleted + result.stale + (
            result.dead_lettered
        )
    state = live(pipeline)
    assert not set(state) & history.deleted
    with pipeline.engine.connect() as conn:
        refused = set(
            conn.execute(
                sa.text("SELECT payload FROM ddbcdc_dead_letters WHERE error = :e"),
                {"e": REFUSED_BELOW_FLOOR},
            ).scalars()
        )
    assert not prune_at or refused or state == history.final
    inexact = {k for k in history.final if state.get(k) != history.final[k]}
    refused_keys = {_userid(p) for p in refused}
    assert inexact <= refused_keys
    if not prune_at:
        assert state == history.final and not refused


def _userid(payload: bytes) -> int:
    import orjson

    return int(orjson.loads(payload)["dynamodb"]["Keys"]["userid"]["N"])


# -- the reported case, through `ddbcdc apply` ---------------------------------------------


def _apply(db: str, path: Path) -> str:
    env = {**os.environ, "DATABASE_URL": db, "DDBCDC_MAPPINGS_DIR": str(MAPPINGS_DIR)}
    ddbcdc = str(Path(sys.executable).parent / "ddbcdc")
    done = subprocess.run(
        [ddbcdc, "apply", str(path), "--batch-size", "50", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr
    return done.stdout


def test_a_2023_history_in_three_apply_runs_with_a_worker_pruning_between(
    db: str, pipeline: Pipeline, tmp_path: Path
) -> None:
    rng = random.Random(2023)
    jan_2023 = int(datetime(2023, 1, 1, tzinfo=UTC).timestamp() * 1_000_000)
    history = generate_history(rng, keys=range(200), steps=3000, start_us=jan_2023, prefix="y")
    stream = history.delivery(rng)
    advance(pipeline, "s1", T)  # the worker is in the present
    third = len(stream) // 3
    for run, part in enumerate((stream[:third], stream[third : 2 * third], stream[2 * third :])):
        path = tmp_path / f"run{run}.jsonl"
        path.write_bytes(b"\n".join(part) + b"\n")
        _apply(db, path)
        pipeline.prune_tombstones()
    state = live(pipeline)
    assert not set(state) & history.deleted  # nothing deleted comes back
    with pipeline.engine.connect() as conn:
        refused = {
            _userid(p)
            for p in conn.execute(sa.text("SELECT payload FROM ddbcdc_dead_letters")).scalars()
        }
    assert {k for k in history.final if state.get(k) != history.final[k]} <= refused


def test_an_idle_caught_up_shard_is_at_the_present(pipeline: Pipeline) -> None:
    from ddbcdc.worker.liveness import ProgressTouch

    now_us = int(datetime.now(UTC).timestamp() * 1_000_000)
    remove(pipeline, 1, now_us - 20 * DAY)
    advance(pipeline, "s1", now_us - 30 * DAY)  # its last change is a month old
    assert pipeline.prune_tombstones() == 0
    touch = ProgressTouch(pipeline.engine, "app", every_s=0.0)
    assert touch("s1", 1500)  # behind: its position stays where its changes are
    assert pipeline.prune_tombstones() == 0
    assert touch("s1", 0)  # an empty batch, caught up: nothing older is left to read
    assert pipeline.prune_tombstones() == 1 and tombstones(pipeline) == set()
