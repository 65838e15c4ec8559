"""The version rule over a routed mapping, on a real PostgreSQL: one versions row per
DynamoDB key whichever table holds the item; any order, duplication and batch split of a
single-table history converges, every table equal to the items of its entity; a REMOVE
deletes from the table the versions row names; an entity change moves the row in one
transaction; concurrent writers of one key wait for each other."""

from __future__ import annotations

import itertools
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import date

import orjson
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ddbcdc.pipeline import Pipeline, SourceRecord
from shop_records import (
    SHOP_TABLES,
    ShopHistory,
    generate,
    image,
    logged_count,
    record,
    shop_mapping,
    table_state,
    versions_state,
)

SHOP = shop_mapping(logged=True)
US = 1_700_000_000_000_000
ORDER = ("CUSTOMER#1", "ORDER#2024-05-01#10")
ORDER_ROW = (1, date(2024, 5, 1), 10)


@pytest.fixture(scope="module")
def engine(fresh_database: Callable[..., AbstractContextManager[str]]) -> Iterator[sa.Engine]:
    with fresh_database("t_routes", mappings=(SHOP,)) as url:
        made = sa.create_engine(url)
        yield made
        made.dispose()


def clear(engine: sa.Engine) -> None:
    logs = [f"ddbcdc_changes__{t}" for t in SHOP_TABLES]
    with engine.begin() as conn:
        names = ", ".join([*SHOP_TABLES, *logs, "ddbcdc_versions__shop", "ddbcdc_dead_letters"])
        conn.execute(sa.text(f"TRUNCATE {names}"))


def state(
    engine: sa.Engine,
) -> tuple[dict[str, dict[tuple[object, ...], str]], dict[object, object], int]:
    with engine.connect() as conn:
        return table_state(conn), versions_state(conn), logged_count(conn)


def process(pipeline: Pipeline, *records: bytes) -> None:
    result = pipeline.process([SourceRecord(r) for r in records])
    assert result.dead_lettered == 0


def test_remove_with_keys_only_deletes_from_the_route_an_attribute_chose(engine: sa.Engine) -> None:
    clear(engine)
    pipeline = Pipeline(engine=engine, mappings=[SHOP])
    process(pipeline, record("INSERT", ORDER, US, eid="a", item=image(ORDER, "order", "v1")))
    assert state(engine)[0]["shop_orders"] == {ORDER_ROW: "v1"}
    process(pipeline, record("REMOVE", ORDER, US + 1, eid="b"))  # no OldImage: keys only
    tables, versions, logged = state(engine)
    assert all(not rows for rows in tables.values())
    assert versions == {ORDER: None} and logged == 2
    with engine.connect() as conn:  # the REMOVE is logged by the route it deleted from
        ops = conn.execute(
            sa.text("SELECT _ddbcdc_op, _ddbcdc_removed_by FROM ddbcdc_changes__shop_orders")
        ).all()
    assert sorted(ops) == [("INSERT", None), ("REMOVE", "user")]  # with its cause


def test_an_entity_change_moves_the_row_in_one_transaction(engine: sa.Engine) -> None:
    clear(engine)
    pipeline = Pipeline(engine=engine, mappings=[SHOP])
    process(pipeline, record("INSERT", ORDER, US, eid="a", item=image(ORDER, "cart", "c")))
    assert state(engine)[0]["shop_unmatched"] == {ORDER: "c"}
    prepared = pipeline.prepare(
        [SourceRecord(record("MODIFY", ORDER, US + 1, eid="b", item=image(ORDER, "order", "o")))]
    )
    with engine.begin() as conn:
        pipeline.materializer.apply(conn, prepared.changes)
        before = state(engine)[0]  # another connection: nothing of it until the commit
        assert before["shop_unmatched"] == {ORDER: "c"} and before["shop_orders"] == {}
    after, versions, _ = state(engine)
    assert after["shop_unmatched"] == {} and after["shop_orders"] == {ORDER_ROW: "o"}
    assert versions == {ORDER: "shop_orders"}
    process(pipeline, record("MODIFY", ORDER, US + 2, eid="c", item=image(ORDER, "cart", "c2")))
    back = state(engine)[0]
    assert back["shop_orders"] == {} and back["shop_unmatched"] == {ORDER: "c2"}


def test_a_stale_entity_change_moves_nothing(engine: sa.Engine) -> None:
    clear(engine)
    pipeline = Pipeline(engine=engine, mappings=[SHOP])
    process(pipeline, record("INSERT", ORDER, US + 10, eid="b", item=image(ORDER, "order", "new")))
    process(pipeline, record("MODIFY", ORDER, US + 5, eid="a", item=image(ORDER, "cart", "old")))
    tables, versions, _ = state(engine)
    assert tables["shop_orders"] == {ORDER_ROW: "new"} and tables["shop_unmatched"] == {}
    assert versions == {ORDER: "shop_orders"}


def test_a_sweep_deletes_a_drifted_row_from_a_route_the_versions_row_does_not_name(
    engine: sa.Engine,
) -> None:
    clear(engine)
    process(
        Pipeline(engine=engine, mappings=[SHOP]),
        record("INSERT", ORDER, US, eid="a", item=image(ORDER, "cart", "c")),
    )
    with engine.begin() as conn:  # the versions row lost track of the live row: drift
        conn.execute(sa.text("UPDATE ddbcdc_versions__shop SET _ddbcdc_route = NULL"))
    swept = Pipeline(engine=engine, mappings=[SHOP], sweep=True)
    process(swept, record("MODIFY", ORDER, US + 1, eid="b", item=image(ORDER, "order", "o")))
    tables, versions, _ = state(engine)
    assert tables["shop_unmatched"] == {} and tables["shop_orders"] == {ORDER_ROW: "o"}
    assert versions == {ORDER: "shop_orders"}


# -- the property: any permutation, duplication and batch split converges ------------------


@st.composite
def histories(draw: st.DrawFn) -> ShopHistory:
    seed = draw(st.integers(0, 2**32 - 1))
    steps = draw(st.integers(1, 24))
    return generate(random.Random(seed), steps=steps, start_us=US, sequence=draw(st.booleans()))


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), history=histories())
def test_any_order_duplication_and_split_converges_per_route(
    engine: sa.Engine, data: st.DataObject, history: ShopHistory
) -> None:
    records = history.records
    dupes = data.draw(st.lists(st.sampled_from(records), max_size=len(records)))
    stream = data.draw(st.permutations(records + dupes))
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(stream) - 1)), max_size=4)))
    clear(engine)
    pipeline = Pipeline(engine=engine, mappings=[SHOP])
    for start, end in itertools.pairwise([0, *cuts, len(stream)]):
        result = pipeline.process([SourceRecord(r) for r in stream[start:end]])
        assert result.received == result.upserted + result.deleted + result.stale
    tables, versions, logged = state(engine)
    assert tables == history.expected()
    assert versions == history.routes()  # one row per DynamoDB key, naming its table
    assert logged == len(records)  # every distinct change logged once, by one route


# -- concurrent writers of one key ---------------------------------------------------------


def _interleave(engine: sa.Engine, first: bytes, second: bytes) -> None:
    """Apply ``first`` in a transaction left open while ``second`` is applied by another
    connection (which must wait for it), then commit ``first``."""
    holder, other = (
        Pipeline(engine=engine, mappings=[SHOP]),
        Pipeline(engine=engine, mappings=[SHOP]),
    )
    prepared = holder.prepare([SourceRecord(first)])
    done = threading.Event()
    errors: list[BaseException] = []

    def apply_second() -> None:
        try:
            other.process([SourceRecord(second)])
        except BaseException as exc:
            errors.append(exc)
        done.set()

    with engine.begin() as conn:
        holder.materializer.apply(conn, prepared.changes)
        thread = threading.Thread(target=apply_second)
        thread.start()
        assert not done.wait(1.0), "the second writer did not wait for the first"
    thread.join(timeout=30)
    assert done.is_set() and not errors, errors


def test_a_remove_committing_first_is_not_undone_by_an_older_move_in_flight(
    engine: sa.Engine,
) -> None:
    clear(engine)
    process(
        Pipeline(engine=engine, mappings=[SHOP]),
        record("INSERT", ORDER, US, eid="a", item=image(ORDER, "cart", "c")),
    )
    move = record("MODIFY", ORDER, US + 5, eid="b", item=image(ORDER, "order", "o"))
    remove = record("REMOVE", ORDER, US + 10, eid="c")
    _interleave(engine, move, remove)  # the move holds the key; the newer REMOVE waits
    tables, versions, _ = state(engine)
    assert all(not rows for rows in tables.values()) and versions == {ORDER: None}


def test_an_older_move_waits_behind_a_newer_one_in_flight(engine: sa.Engine) -> None:
    clear(engine)
    process(
        Pipeline(engine=engine, mappings=[SHOP]),
        record("INSERT", ORDER, US, eid="a", item=image(ORDER, "cart", "c")),
    )
    newer = record("MODIFY", ORDER, US + 10, eid="c", item=image(ORDER, "order", "o"))
    older = record("MODIFY", ORDER, US + 5, eid="b", item=image(ORDER, "cart", "late"))
    _interleave(engine, newer, older)
    tables, versions, _ = state(engine)
    assert tables["shop_orders"] == {ORDER_ROW: "o"} and tables["shop_unmatched"] == {}
    assert versions == {ORDER: "shop_orders"}


def test_refused_changes_of_a_routed_batch_are_isolated_and_moves_stay_whole(
    engine: sa.Engine,
) -> None:
    """A value a route's table refuses (a CHECK constraint) is one dead letter per refused
    change; the batch's other changes apply, a key's older valid change included; an item
    whose move into that table is refused stays whole where it was."""
    clear(engine)
    pipeline = Pipeline(engine=engine, mappings=[SHOP])
    moved, kept = ORDER, ("CUSTOMER#1", "ORDER#2024-05-01#11")
    older = ("CUSTOMER#3", "ORDER#2024-05-03#12")
    process(
        pipeline,
        record("INSERT", moved, US, eid="a", item=image(moved, "cart", "c")),
        record("INSERT", kept, US, eid="b", item=image(kept, "order", "ok")),
    )
    with engine.begin() as conn:
        conn.execute(
            sa.text("ALTER TABLE shop_orders ADD CONSTRAINT no_bad CHECK (status <> 'bad')")
        )
    try:
        result = pipeline.process(
            [
                SourceRecord(r)
                for r in (
                    record("MODIFY", moved, US + 1, eid="c", item=image(moved, "order", "bad")),
                    record("MODIFY", kept, US + 1, eid="d", item=image(kept, "order", "ok2")),
                    record("INSERT", older, US + 1, eid="e", item=image(older, "cart", "x1")),
                    record("MODIFY", older, US + 2, eid="f", item=image(older, "order", "bad")),
                )
            ]
        )
        tables, versions, _ = state(engine)
        with engine.connect() as conn:
            payloads = conn.execute(sa.text("SELECT payload FROM ddbcdc_dead_letters")).scalars()
            letters = sorted(orjson.loads(p)["eventID"] for p in payloads)
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE shop_orders DROP CONSTRAINT no_bad"))
    assert result.dead_lettered == 2
    assert letters == ["c", "f"]  # one per refused change
    assert tables["shop_unmatched"] == {moved: "c", older: "x1"}
    assert tables["shop_orders"] == {(1, date(2024, 5, 1), 11): "ok2"}
    assert versions[moved] == "shop_unmatched" and versions[older] == "shop_unmatched"


def test_a_batch_writes_only_the_tables_of_the_routes_it_touches(engine: sa.Engine) -> None:
    # Another route's table locked (a migration, a backfill) does not hold this batch up.
    clear(engine)
    pipeline = Pipeline(engine=engine, mappings=[SHOP])
    done = threading.Event()

    def apply() -> None:
        process(pipeline, record("INSERT", ORDER, US, eid="a", item=image(ORDER, "order", "v1")))
        done.set()

    with engine.connect() as locker, locker.begin():
        locker.execute(sa.text("LOCK TABLE shop_order_lines IN ACCESS EXCLUSIVE MODE"))
        worker = threading.Thread(target=apply)
        worker.start()
        finished = done.wait(timeout=10)
    worker.join()
    assert finished, "the batch waited for a table none of its rows goes to"
    assert state(engine)[0]["shop_orders"] == {ORDER_ROW: "v1"}
