"""Backfill batches two at a time in PostgreSQL still commit in order, and never wait forever.

:func:`ddbcdc.backfill.feed.feed` with ``in_flight=2`` applies a batch while the one before
it is still in PostgreSQL. Each batch commits only after the one before it: a failed batch
takes the batch after it along, so what a batch commits with it (its source's position)
never passes a batch that did not commit. A batch that waits for the one before it holds its
keys' locks; when that one waits for a third writer that waits for one of those keys, the
waiting batch rolls back after :data:`~ddbcdc.backfill.feed.TURN_WAIT_S`, lets the others go
on, and is applied again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from evolution_support import US, shipped

from change_records import record
from ddbcdc.backfill import feed as feeding
from ddbcdc.backfill.feed import Batch, feed, rows_pipeline
from ddbcdc.migrate import run as migration
from ddbcdc.pipeline import Pipeline, SourceRecord
from ddbcdc.schema.mapping import parse_mapping


class BatchFailedError(Exception):
    pass


@pytest.fixture
def pipeline(fresh_database: Callable[..., AbstractContextManager[str]]) -> Iterator[Pipeline]:
    with fresh_database("t_in_flight") as url:
        mapping = parse_mapping(shipped(), name="customers")
        engine = sa.create_engine(url, pool_size=4)
        migration.upgrade(engine, [mapping])
        made = rows_pipeline(engine, [mapping], tombstone_horizon=timedelta(days=8))
        yield made
        made.close()


def batch(*keys: int, also: Callable[[sa.Connection], None] | None = None) -> Batch:
    records = [
        SourceRecord(record("INSERT", {"userid": k}, US, image={"first_name": "A"}, eid=f"e{k}"))
        for k in keys
    ]
    return Batch(records, also)


def live(pipeline: Pipeline) -> list[int]:
    with pipeline.engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT userid FROM customers ORDER BY 1")).scalars())


def test_a_failed_batch_takes_the_batches_after_it_along(pipeline: Pipeline) -> None:
    committed: list[int] = []

    def note(number: int) -> Callable[[sa.Connection], None]:
        def also(conn: sa.Connection) -> None:
            committed.append(number)

        return also

    def slow_then_fail(conn: sa.Connection) -> None:
        # The batch after this one is applied meanwhile and waits for this one's commit.
        query = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND state = 'idle in transaction' AND pid <> pg_backend_pid()"
        )
        for _ in range(600):
            conn.execute(sa.select(sa.func.pg_stat_clear_snapshot()))  # read it afresh
            if conn.execute(sa.text(query)).scalar_one():
                raise BatchFailedError
            threading.Event().wait(0.05)
        raise AssertionError("the next batch was not applied at the same time")

    batches = [
        batch(1, 2, also=note(0)),
        batch(3, 4, also=slow_then_fail),
        batch(5, 6, also=note(2)),
        batch(7, 8, also=note(3)),
    ]
    with pytest.raises(BatchFailedError):
        feed(pipeline, iter(batches), in_flight=2)
    assert live(pipeline) == [1, 2]
    assert committed == [0]


def test_batches_commit_in_order_and_all_apply(pipeline: Pipeline) -> None:
    order: list[int] = []

    def note(number: int, delay: float) -> Callable[[sa.Connection], None]:
        def also(conn: sa.Connection) -> None:
            conn.execute(sa.select(sa.func.pg_sleep(delay)))
            order.append(number)

        return also

    batches = [
        batch(2 * n + 1, 2 * n + 2, also=note(n, 0.3 if n % 2 == 0 else 0)) for n in range(6)
    ]
    seen: list[int] = []
    result = feed(
        pipeline,
        iter(batches),
        in_flight=2,
        on_batch=lambda b, r: seen.append(batches.index(b)),
    )
    assert result.upserted == 12
    assert live(pipeline) == list(range(1, 13))
    assert order == seen == list(range(6))


def test_a_batch_waiting_for_its_turn_lets_a_third_writer_through(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Batch 0 waits for key 1, which another transaction holds; that one then wants key 3,
    which batch 1 holds while it waits for batch 0's commit. Batch 1 gives way."""
    feed(pipeline, iter([batch(1, 3)]))  # versions rows to lock
    monkeypatch.setattr(feeding, "TURN_WAIT_S", 0.5)
    monkeypatch.setattr(feeding.apply_in_turn, "__kwdefaults__", {"wait_s": 0.5})
    holder = pipeline.engine.connect()
    holder.begin()
    lock = "SELECT 1 FROM ddbcdc_versions__customers WHERE userid = :k FOR UPDATE"
    holder.execute(sa.text(lock), {"k": 1})

    def waiting_for_locks() -> int:
        query = (
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        with pipeline.engine.connect() as conn:
            return int(conn.execute(sa.text(query)).scalar_one())

    caplog.set_level("INFO", logger="ddbcdc.backfill.feed")
    done: list[Any] = []
    later = [batch(1, 2), batch(3, 4)]
    runner = threading.Thread(target=lambda: done.append(feed(pipeline, iter(later), in_flight=2)))
    runner.start()
    for _ in range(600):
        if waiting_for_locks() == 1:  # batch 0, on key 1
            break
        threading.Event().wait(0.05)
    threading.Event().wait(0.3)  # batch 1 holds key 3 and waits for batch 0
    holder.execute(sa.text(lock), {"k": 3})  # waits for batch 1 until it gives way
    holder.commit()
    holder.close()
    runner.join(60)
    assert not runner.is_alive(), "the batches and the third writer wait for each other"
    assert done and (done[0].received, done[0].upserted) == (4, 2)  # keys 1 and 3: as before
    assert "applying it again" in caplog.text
    assert live(pipeline) == [1, 2, 3, 4]


def test_batches_in_postgresql_when_the_source_fails_are_committed_and_reported(
    pipeline: Pipeline,
) -> None:
    def source() -> Iterator[Batch]:
        yield batch(1, 2)
        yield batch(3, 4)
        raise BatchFailedError  # the next page could not be read

    seen: list[int] = []
    with pytest.raises(BatchFailedError):
        feed(pipeline, source(), in_flight=2, on_batch=lambda b, r: seen.append(r.upserted))
    assert live(pipeline) == [1, 2, 3, 4]
    assert seen == [2, 2]
