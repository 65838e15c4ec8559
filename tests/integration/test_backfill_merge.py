"""The merge of a snapshot and the stream, as a property: scan pages and stream changes
applied in any interleaving, order, duplication and batch split converge to the table.

A generated world: items that exist before the stream does (on no stream record), then a
history of writes (INSERT, MODIFY, REMOVE, delete-then-reinsert, same-microsecond ties), each
on the stream with its time and an increasing sequence number. Each key is read by a scan
page at some moment ``read`` (some keys twice: a page read again after a resume); the page
holds the state at that moment and gets version ``read - margin`` with sequence -1, exactly
as ``ddbcdc snapshot`` writes it. Everything goes through the real pipelines into PostgreSQL:
the stream's (change log on) and the backfill's (no change log). The live table must end
equal to the final state of the world.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ddbcdc.backfill.records import RecordMaker
from ddbcdc.pipeline import Pipeline, SourceRecord
from ddbcdc.schema.mapping import load_mappings

ROOT = Path(__file__).resolve().parents[2]
(MAPPING,) = load_mappings(ROOT / "schemas" / "tables")
T0 = 1_764_000_000_000_000
KEYS = (1, 2, 3, 4)


@pytest.fixture(scope="module")
def engine(fresh_database: Callable[..., AbstractContextManager[str]]) -> Iterator[sa.Engine]:
    with fresh_database("t_merge", mappings=(MAPPING,)) as url:
        made = sa.create_engine(url)
        yield made
        made.dispose()


def stream_record(event: str, key: int, us: int, seq: int, name: str | None) -> SourceRecord:
    body: dict[str, Any] = {"ApproximateCreationDateTime": us, "Keys": {"userid": {"N": str(key)}}}
    if name is not None:
        body["NewImage"] = {"userid": {"N": str(key)}, "first_name": {"S": name}}
    data = {
        "eventID": f"ev{seq:08d}",
        "eventName": event,
        "tableName": "customers",
        "dynamodb": body,
    }
    return SourceRecord(orjson.dumps(data), "shardId-000000000000", str(seq))


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[tuple[str, SourceRecord]], dict[int, str]]:
    """(events: ("stream" | "scan", record), the final state userid -> first_name)."""
    state = {k: f"old{k}" for k in KEYS if draw(st.booleans())}  # before the stream
    writes: list[tuple[int, int, str | None]] = []  # (time, key, name or None: removed)
    us, history = T0, [(T0 - 1, dict(state))]
    for step in range(draw(st.integers(0, 10))):
        us += draw(st.sampled_from([0, 1, 2, 5]))
        key = draw(st.sampled_from(KEYS))
        name = None if key in state and draw(st.booleans()) else f"k{key}s{step}"
        writes.append((us, key, name))
        if name is None:
            state.pop(key)
        else:
            state[key] = name
        history.append((us, dict(state)))
    events: list[tuple[str, SourceRecord]] = []
    seen: set[int] = set()
    for seq, (at, key, name) in enumerate(writes, 1):
        event = "REMOVE" if name is None else ("MODIFY" if key in seen else "INSERT")
        seen.add(key)
        events.append(("stream", stream_record(event, key, at, seq, name)))
    maker = RecordMaker(replace(MAPPING, change_log=False), ["userid"])
    for key in KEYS:
        for _ in range(draw(st.integers(1, 2))):
            # Reads land near writes, where the version rule is tested hardest.
            read = max(T0, draw(st.sampled_from([t for t, _ in history])) + draw(st.integers(0, 3)))
            margin = draw(st.sampled_from([0, 1, 3]))
            visible = [s for t, s in history if t <= read][-1]  # the state at the read
            if key in visible:
                item = {"userid": {"N": str(key)}, "first_name": {"S": visible[key]}}
                record = maker.put(
                    item, version_us=read - margin, event_id=f"snapshot:r{read}:{key}"
                )
                events.append(("scan", record))
    return events, state


def clear(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "TRUNCATE customers, ddbcdc_versions__customers, ddbcdc_changes__customers, "
                "ddbcdc_dead_letters"
            )
        )


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), world=worlds())
def test_pages_and_changes_in_any_interleaving_converge(
    engine: sa.Engine,
    data: st.DataObject,
    world: tuple[list[tuple[str, SourceRecord]], dict[int, str]],
) -> None:
    events, final = world
    dupes = data.draw(st.lists(st.sampled_from(events), max_size=4)) if events else []
    order = data.draw(st.permutations(events + dupes))
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(order) - 1)), max_size=4)))
    clear(engine)
    stream = Pipeline(engine=engine, mappings=[MAPPING])
    backfill = Pipeline(engine=engine, mappings=[MAPPING], timestamp_unit="us", change_log=False)
    for start, end in itertools.pairwise([0, *cuts, len(order)]):
        batch = order[start:end]
        for source, pipeline in (("stream", stream), ("scan", backfill)):
            records = [r for s, r in batch if s == source]
            if records:
                assert pipeline.process(records).dead_lettered == 0
    with engine.connect() as conn:
        live = dict(conn.execute(sa.text("SELECT userid, first_name FROM customers")).all())
        logged = conn.execute(sa.text("SELECT count(*) FROM ddbcdc_changes__customers")).scalar()
    assert live == final
    assert logged == sum(1 for s, _ in events if s == "stream")  # scan rows are not changes
