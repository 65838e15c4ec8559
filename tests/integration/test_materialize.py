"""Materialize on a real PostgreSQL: any order, duplication and batching converge."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ddbcdc.decode.attributes import marshal
from ddbcdc.errors import DatabaseUnavailableError
from ddbcdc.local.postgres import free_port
from ddbcdc.pipeline import Pipeline, ShardPosition, SourceRecord
from ddbcdc.schema.bookkeeping import shard_progress
from ddbcdc.schema.mapping import load_mappings
from ddbcdc.schema.tables import mapped_tables

SHIPPED = load_mappings(Path(__file__).resolve().parents[2] / "schemas" / "tables")
TABLES = mapped_tables(SHIPPED)["customers"]
LIVE, VERSIONS, LOG = TABLES.live, TABLES.versions, TABLES.changes
NOW_US = int(datetime.now(UTC).timestamp() * 1_000_000)


@pytest.fixture(scope="module")
def engine(fresh_database: Callable[..., AbstractContextManager[str]]) -> Iterator[sa.Engine]:
    """A migrated database of this module's own."""
    with fresh_database("t_materialize", mappings=SHIPPED) as url:
        eng = sa.create_engine(url)
        yield eng
        eng.dispose()


@pytest.fixture
def pipeline(engine: sa.Engine) -> Iterator[Pipeline]:
    clear(engine)
    p = Pipeline(engine=engine, mappings=SHIPPED)
    yield p


def clear(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        for table in (*TABLES.all, shard_progress):
            conn.execute(sa.delete(table))


def change(
    event: str,
    userid: int,
    us: int,
    *,
    seq: str | None = None,
    eid: str | None = None,
    name: str = "n",
) -> SourceRecord:
    dynamodb: dict[str, Any] = {
        "ApproximateCreationDateTime": us,
        "Keys": marshal({"userid": userid}),
    }
    if event != "REMOVE":
        dynamodb["NewImage"] = marshal({"userid": userid, "first_name": name, "phone": userid})
    doc = {
        "awsRegion": "us-east-1",
        "eventID": eid or uuid.uuid4().hex,
        "eventName": event,
        "tableName": "customers",
        "dynamodb": dynamodb,
        "eventSource": "aws:dynamodb",
    }
    return SourceRecord(orjson.dumps(doc), shard_id="shardId-1", sequence_number=seq)


def live_rows(engine: sa.Engine) -> dict[int, str | None]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(LIVE.c.userid, LIVE.c.first_name)).all())  # type: ignore[arg-type]


def test_basic_counts_and_state(pipeline: Pipeline, engine: sa.Engine) -> None:
    t = NOW_US
    result = pipeline.process(
        [
            change("INSERT", 1, t, name="a"),
            change("MODIFY", 1, t + 1, name="b"),
            change("INSERT", 2, t),
            change("REMOVE", 3, t),
        ]
    )
    assert (result.received, result.upserted, result.deleted, result.stale) == (4, 2, 1, 1)
    assert live_rows(engine) == {1: "b", 2: "n"}
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(LOG)).scalar() == 4


def test_late_insert_does_not_resurrect_but_newer_reinsert_does(
    pipeline: Pipeline, engine: sa.Engine
) -> None:
    t = NOW_US
    pipeline.process([change("INSERT", 1, t, name="v1"), change("REMOVE", 1, t + 10)])
    late = pipeline.process([change("MODIFY", 1, t + 5, name="late")])
    assert late.stale == 1 and live_rows(engine) == {}
    again = pipeline.process([change("INSERT", 1, t + 20, name="back")])
    assert again.upserted == 1 and live_rows(engine) == {1: "back"}
    stale_delete = pipeline.process([change("REMOVE", 1, t + 15)])
    assert stale_delete.stale == 1 and live_rows(engine) == {1: "back"}


def test_same_microsecond_ties_use_sequence_then_event_id(
    pipeline: Pipeline, engine: sa.Engine
) -> None:
    t = NOW_US
    pipeline.process([change("MODIFY", 1, t, seq="20", eid="a", name="seq20")])
    pipeline.process([change("MODIFY", 1, t, seq="3", eid="z", name="seq3")])
    assert live_rows(engine) == {1: "seq20"}
    pipeline.process([change("MODIFY", 2, t, eid="b", name="b"), change("MODIFY", 2, t, eid="a")])
    pipeline.process([change("MODIFY", 2, t, eid="B", name="B")])  # "B" < "a" < "b" in C order
    assert live_rows(engine)[2] == "b"


def test_shard_progress_is_upserted_with_the_batch(pipeline: Pipeline, engine: sa.Engine) -> None:
    pos = ShardPosition("app", "shardId-1", "300", millis_behind_latest=1500)
    pipeline.process([change("INSERT", 1, NOW_US), change("INSERT", 2, NOW_US)], position=pos)
    pipeline.process(
        [change("INSERT", 3, NOW_US)],
        position=ShardPosition("app", "shardId-1", "400", millis_behind_latest=0),
    )
    with engine.connect() as conn:
        row = conn.execute(sa.select(shard_progress)).one()
    assert (row.sequence_number, row.records_total, row.batches_total) == ("400", 3, 2)
    assert row.millis_behind_latest == 0


def test_database_down_raises_retryable_error() -> None:
    down = sa.create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x")
    p = Pipeline(engine=down, mappings=SHIPPED)
    with pytest.raises(DatabaseUnavailableError):
        p.process([change("INSERT", 1, NOW_US)])
    p.close()


def test_rejected_batch_is_retried_change_by_change(pipeline: Pipeline, engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE customers ADD CONSTRAINT t_short CHECK (phone <> '13')"))
    try:
        result = pipeline.process(
            [
                change("INSERT", 12, NOW_US),
                change("INSERT", 13, NOW_US),
                change("INSERT", 14, NOW_US),
            ]
        )
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE customers DROP CONSTRAINT t_short"))
    assert (result.upserted, result.dead_lettered) == (2, 1)
    assert set(live_rows(engine)) == {12, 14}
    with engine.connect() as conn:
        stage, error = conn.execute(sa.text("SELECT stage, error FROM ddbcdc_dead_letters")).one()
    assert stage == "apply" and "t_short" in error
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM ddbcdc_dead_letters"))


# -- the property: any permutation, duplication and batch split converges -----------------


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[SourceRecord], dict[int, str]]:
    """Per key, a valid history with ties; returns its records and the expected final state."""
    records: list[SourceRecord] = []
    expected: dict[int, str] = {}
    serial = itertools.count()
    for userid in range(draw(st.integers(1, 4))):
        with_seq = draw(st.booleans())
        us, seq, alive = NOW_US, 1000, False
        for step in range(draw(st.integers(1, 6))):
            us += draw(st.sampled_from([0, 0, 1, 7]))  # many same-microsecond ties
            seq += draw(st.integers(1, 3))
            n = next(serial)
            eid = f"{n:06d}-{draw(st.sampled_from('xyz'))}" if not with_seq else uuid.uuid4().hex
            remove = alive and draw(st.booleans())
            event = "REMOVE" if remove else ("MODIFY" if alive else "INSERT")
            name = f"k{userid}s{step}"
            records.append(
                change(event, userid, us, seq=str(seq) if with_seq else None, eid=eid, name=name)
            )
            alive = not remove
            if alive:
                expected[userid] = name
            else:
                expected.pop(userid, None)
    return records, expected


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), history=histories())
def test_any_order_duplication_and_split_converges(
    engine: sa.Engine, data: st.DataObject, history: tuple[list[SourceRecord], dict[int, str]]
) -> None:
    records, expected = history
    dupes = data.draw(st.lists(st.sampled_from(records), max_size=len(records)))
    stream = data.draw(st.permutations(records + dupes))
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(stream) - 1)), max_size=4)))
    clear(engine)
    p = Pipeline(engine=engine, mappings=SHIPPED)
    total = 0
    for start, end in itertools.pairwise([0, *cuts, len(stream)]):
        result = p.process(stream[start:end])
        assert result.received == result.upserted + result.deleted + result.stale
        total += result.received
    assert total == len(stream)
    assert live_rows(engine) == expected
    with engine.connect() as conn:
        logged = conn.execute(sa.select(sa.func.count()).select_from(LOG)).scalar()
    assert logged == len(records)
