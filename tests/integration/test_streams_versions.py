"""Versions at second precision: DynamoDB Streams histories, as a property, through the real
pipeline (decode of the adapter's records, cleanse, the materializer) into PostgreSQL.

A generated world: writes to a few keys at true times in microseconds, many in one second;
each on the stream as DynamoDB Streams puts it there, through the adapter: its
ApproximateCreationDateTime rounded down to the whole second (epoch milliseconds in the
record), ``{}`` for an absent image, no table name, a random event id, and the sequence
number of its place in a shard lineage (``ddbcdc.local.lineage``: rollovers, splits, often in
the middle of a key's burst of same-second changes). Snapshot pages read keys at moments
``R`` and are written at ``R - m`` with sequence -1, as ``ddbcdc snapshot`` writes them, for
margins ``m`` of one second and more. Every stream record and page, in any order, with
duplicates and any batch split, must leave PostgreSQL equal to the world's final state, and
the change log must hold each change once, in the order it was made.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ddbcdc.backfill.records import RecordMaker
from ddbcdc.local.lineage import Lineage, key_hash
from ddbcdc.pipeline import Pipeline, SourceRecord
from ddbcdc.schema.mapping import load_mappings

ROOT = Path(__file__).resolve().parents[2]
(MAPPING,) = load_mappings(ROOT / "schemas" / "tables")
SECOND = 1_000_000
T0 = 1_764_000_000 * SECOND  # a whole second
KEYS = (1, 2, 3)
ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/customers/stream/2025-11-24T16:00:00.000"


@pytest.fixture(scope="module")
def engine(fresh_database: Callable[..., AbstractContextManager[str]]) -> Iterator[sa.Engine]:
    with fresh_database("t_seconds", mappings=(MAPPING,)) as url:
        made = sa.create_engine(url)
        yield made
        made.dispose()


def adapter_record(event: str, key: int, at_us: int, name: str | None, serial: int) -> bytes:
    """A change as the DynamoDB Streams Kinesis Adapter hands it to a record processor."""
    keys = {"userid": {"N": str(key)}}
    image = {**keys, "first_name": {"S": name}} if name is not None else {}
    dynamodb = {
        "ApproximateCreationDateTime": at_us // SECOND * 1000,  # whole seconds, in ms
        "Keys": keys,
        "NewImage": image if event != "REMOVE" else {},
        "OldImage": {},
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    event_id = hashlib.md5(f"{serial}".encode()).hexdigest()
    return orjson.dumps(
        {
            "eventID": event_id,
            "eventName": event,
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1",
            "dynamodb": dynamodb,
        }
    )


@dataclass
class World:
    """The stream records and snapshot pages of a generated world, and how it ends."""

    stream: list[SourceRecord] = field(default_factory=list)
    pages: list[SourceRecord] = field(default_factory=list)
    final: dict[int, str] = field(default_factory=dict)
    written: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))


@st.composite
def worlds(draw: st.DrawFn) -> World:
    world = World()
    state = {k: f"old{k}" for k in KEYS if draw(st.booleans())}  # before the stream began
    lineage = Lineage(ARN, draw(st.integers(1, 2)), created_ms=T0 // 1000)
    history: list[tuple[int, dict[int, str]]] = [(T0 - 1, dict(state))]
    at = T0 + draw(st.integers(0, SECOND - 1))
    seen = set(state)
    for step in range(draw(st.integers(0, 14))):
        if step and draw(st.integers(0, 4)) == 0:  # a rollover, often inside a burst
            lineage.roll(step, created_ms=at // 1000, split=draw(st.booleans()))
        at += draw(st.sampled_from([0, 1, 30_000, 400_000, 999_999, SECOND, 2_500_000]))
        key = draw(st.sampled_from(KEYS))
        name = None if key in state and draw(st.booleans()) else f"k{key}s{step}"
        event = "REMOVE" if name is None else ("MODIFY" if key in seen else "INSERT")
        seen.add(key)
        generation = lineage.current
        shard = generation.shard_ids[key_hash({"userid": {"N": str(key)}}) % generation.modulus]
        data = adapter_record(event, key, at, name, step)
        world.stream.append(SourceRecord(data, shard, generation.sequence(step)))
        world.written[key].append(event)
        if name is None:
            state.pop(key)
        else:
            state[key] = name
        history.append((at, dict(state)))
    maker = RecordMaker(replace(MAPPING, change_log=False), ["userid"])
    for key in KEYS:
        for _ in range(draw(st.integers(1, 2))):  # what existed before the stream is read
            # Reads land near writes, where a rounded-down timestamp is most tempting to lose.
            read = draw(st.sampled_from([t for t, _ in history])) + draw(
                st.sampled_from([0, 1, 500_000, SECOND - 1])
            )
            margin = draw(st.sampled_from([SECOND, SECOND + 1, 5 * SECOND]))
            visible = [s for t, s in history if t <= read][-1]
            if key in visible:
                item = {"userid": {"N": str(key)}, "first_name": {"S": visible[key]}}
                page = maker.put(item, version_us=read - margin, event_id=f"snapshot:{read}:{key}")
                world.pages.append(page)
    world.final = state
    return world


def clear(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "TRUNCATE customers, ddbcdc_versions__customers, ddbcdc_changes__customers, "
                "ddbcdc_dead_letters"
            )
        )


def logged_by_key(engine: sa.Engine) -> dict[int, list[str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT userid, _ddbcdc_op FROM ddbcdc_changes__customers ORDER BY userid, "
                '_ddbcdc_version_us, _ddbcdc_sequence, _ddbcdc_event_id COLLATE "C"'
            )
        ).all()
    found: dict[int, list[str]] = defaultdict(list)
    for userid, op in rows:
        found[int(userid)].append(op)
    return dict(found)


def apply(engine: sa.Engine, events: list[tuple[str, SourceRecord]], cuts: list[int]) -> None:
    stream = Pipeline(engine=engine, mappings=[MAPPING], source_table="customers")
    backfill = Pipeline(engine=engine, mappings=[MAPPING], timestamp_unit="us", change_log=False)
    try:
        for start, end in itertools.pairwise([0, *cuts, len(events)]):
            batch = events[start:end]
            for kind, pipeline in (("stream", stream), ("page", backfill)):
                records = [r for k, r in batch if k == kind]
                if records:
                    assert pipeline.process(records).dead_lettered == 0
    finally:
        stream.close()
        backfill.close()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), world=worlds())
def test_same_second_changes_across_rollovers_and_pages_converge(
    engine: sa.Engine, data: st.DataObject, world: World
) -> None:
    events = [("stream", r) for r in world.stream] + [("page", r) for r in world.pages]
    dupes = data.draw(st.lists(st.sampled_from(events), max_size=4)) if events else []
    order = data.draw(st.permutations(events + dupes))
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(order) - 1)), max_size=4)))
    clear(engine)
    apply(engine, order, cuts)
    with engine.connect() as conn:
        live = dict(conn.execute(sa.text("SELECT userid, first_name FROM customers")).all())
    assert live == world.final
    assert logged_by_key(engine) == {k: v for k, v in world.written.items() if v}


def test_a_page_at_r_minus_less_than_a_second_can_beat_a_later_write(engine: sa.Engine) -> None:
    """Why the margin must cover the rounding: a write at S + 0.9 s is stamped S; a page read
    at S + 0.5 s, before it, written at R - 0.4 s (above S), would overwrite it for good."""
    second = T0 + 7 * SECOND
    maker = RecordMaker(replace(MAPPING, change_log=False), ["userid"])
    write = SourceRecord(
        adapter_record("MODIFY", 1, second + 900_000, "after", 1),
        "shardId-1",
        "100000000000000000001",
    )
    read = second + 500_000
    item = {"userid": {"N": "1"}, "first_name": {"S": "before"}}

    def final(margin: int) -> str:
        clear(engine)
        page = maker.put(item, version_us=read - margin, event_id=f"snapshot:{margin}")
        apply(engine, [("page", page), ("stream", write)], [])
        with engine.connect() as conn:
            return str(conn.execute(sa.text("SELECT first_name FROM customers")).scalar())

    assert final(400_000) == "before"  # wrong: the later write lost to an older read
    assert final(SECOND) == "after"
