"""The merge of a snapshot and the stream, as a property: scan pages and stream changes
applied in any interleaving, order, duplication and batch split converge to the table.

A generated world: items that exist before the stream does (on no stream record), then a
history of writes (INSERT, MODIFY, REMOVE, delete-then-reinsert, same-microsecond ties), each
on the stream with its time and an increasing sequence number. Each key is read by a scan
page at some moment ``read`` (some keys twice: a page read again after a resume); the page
holds the state at that moment and gets version ``read - margin`` with sequence -1, exactly
as ``ddbcdc snapshot`` writes it. Everything goes through the real pipelines into PostgreSQL:
the stream's (change log on) and the backfill's (no change log). The live table must end
equal to the final state of the world. The same worlds run over the single-table ``shop``
(a routed mapping, items moving between tables as their entity attribute changes): every
route's table ends equal to the items of its entity.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ddbcdc.backfill.records import RecordMaker
from ddbcdc.decode.attributes import marshal
from ddbcdc.pipeline import Pipeline, SourceRecord
from ddbcdc.schema.mapping import load_mappings, without_change_log
from shop_records import KEYS as KEYS_SHOP
from shop_records import (
    ORDER_KEYS,
    SHOP_TABLES,
    ShopHistory,
    image,
    logged_count,
    shop_mapping,
    table_state,
)
from shop_records import record as shop_record

ROOT = Path(__file__).resolve().parents[2]
(MAPPING,) = load_mappings(ROOT / "schemas" / "tables")
T0 = 1_764_000_000_000_000
KEYS = (1, 2, 3, 4)


@pytest.fixture(scope="module")
def engine(fresh_database: Callable[..., AbstractContextManager[str]]) -> Iterator[sa.Engine]:
    with fresh_database("t_merge", mappings=(MAPPING, shop_mapping(logged=True))) as url:
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


class Model:
    """The customers table (a plain mapping) and what a world's state looks like there."""

    mapping = MAPPING
    keys: tuple[Any, ...] = KEYS
    tables = "customers, ddbcdc_versions__customers, ddbcdc_changes__customers"
    key_attributes = ["userid"]

    def value(self, draw: st.DrawFn, key: Any, step: int) -> Any:
        return f"k{key}s{step}"

    def record(self, event: str, key: Any, us: int, seq: int, value: Any) -> SourceRecord:
        return stream_record(event, key, us, seq, value)

    def item(self, key: Any, value: Any) -> dict[str, Any]:
        return {"userid": {"N": str(key)}, "first_name": {"S": value}}

    def read(self, conn: sa.Connection) -> Any:
        live = dict(conn.execute(sa.text("SELECT userid, first_name FROM customers")).all())
        logged = conn.execute(sa.text("SELECT count(*) FROM ddbcdc_changes__customers")).scalar()
        return live, logged

    def expected(self, final: dict[Any, Any]) -> Any:
        return final


class ShopModel(Model):
    """The single-table shop (a routed mapping): items move between tables as ``_et``
    changes; every route logs."""

    mapping = shop_mapping(logged=True)
    keys = KEYS_SHOP
    tables = ", ".join(
        [*SHOP_TABLES, *(f"ddbcdc_changes__{t}" for t in SHOP_TABLES), "ddbcdc_versions__shop"]
    )
    key_attributes = ["PK", "SK"]

    def value(self, draw: st.DrawFn, key: Any, step: int) -> Any:
        entity = draw(st.sampled_from(["order", "cart"])) if key in ORDER_KEYS else "thing"
        return entity, f"s{step}"

    def record(self, event: str, key: Any, us: int, seq: int, value: Any) -> SourceRecord:
        item = image(key, *value) if value is not None else None
        return SourceRecord(
            shop_record(event, key, us, eid=f"ev{seq:08d}", item=item, sequence=str(seq)),
            "shardId-000000000000",
            str(seq),
        )

    def item(self, key: Any, value: Any) -> dict[str, Any]:
        return marshal(image(key, *value))

    def read(self, conn: sa.Connection) -> Any:
        return table_state(conn), logged_count(conn)

    def expected(self, final: dict[Any, Any]) -> Any:
        history = ShopHistory(final=dict(final))
        return history.expected()


MODELS = {"plain": Model(), "routed": ShopModel()}


@st.composite
def worlds(draw: st.DrawFn, model: Model) -> tuple[list[tuple[str, SourceRecord]], dict[Any, Any]]:
    """(events: ("stream" | "scan", record), the final state key -> value)."""
    state = {k: model.value(draw, k, -1) for k in model.keys if draw(st.booleans())}
    writes: list[tuple[int, Any, Any]] = []  # (time, key, value or None: removed)
    us, history = T0, [(T0 - 1, dict(state))]
    for step in range(draw(st.integers(0, 10))):
        us += draw(st.sampled_from([0, 1, 2, 5]))
        key = draw(st.sampled_from(model.keys))
        value = None if key in state and draw(st.booleans()) else model.value(draw, key, step)
        writes.append((us, key, value))
        if value is None:
            state.pop(key)
        else:
            state[key] = value
        history.append((us, dict(state)))
    events: list[tuple[str, SourceRecord]] = []
    seen: set[Any] = set()
    for seq, (at, key, value) in enumerate(writes, 1):
        event = "REMOVE" if value is None else ("MODIFY" if key in seen else "INSERT")
        seen.add(key)
        events.append(("stream", model.record(event, key, at, seq, value)))
    maker = RecordMaker(without_change_log(model.mapping), model.key_attributes)
    for key in model.keys:
        for _ in range(draw(st.integers(1, 2))):
            # Reads land near writes, where the version rule is tested hardest.
            read = max(T0, draw(st.sampled_from([t for t, _ in history])) + draw(st.integers(0, 3)))
            margin = draw(st.sampled_from([0, 1, 3]))
            visible = [s for t, s in history if t <= read][-1]  # the state at the read
            if key in visible:
                record = maker.put(
                    model.item(key, visible[key]),
                    version_us=read - margin,
                    event_id=f"snapshot:r{read}:{key}",
                )
                events.append(("scan", record))
    return events, state


def clear(engine: sa.Engine, model: Model) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {model.tables}, ddbcdc_dead_letters"))


@pytest.mark.parametrize("kind", sorted(MODELS))
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_pages_and_changes_in_any_interleaving_converge(
    engine: sa.Engine, data: st.DataObject, kind: str
) -> None:
    model = MODELS[kind]
    events, final = data.draw(worlds(model))
    dupes = data.draw(st.lists(st.sampled_from(events), max_size=4)) if events else []
    order = data.draw(st.permutations(events + dupes))
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(order) - 1)), max_size=4)))
    clear(engine, model)
    stream = Pipeline(engine=engine, mappings=[model.mapping])
    backfill = Pipeline(
        engine=engine, mappings=[model.mapping], timestamp_unit="us", change_log=False
    )
    for start, end in itertools.pairwise([0, *cuts, len(order)]):
        batch = order[start:end]
        for source, pipeline in (("stream", stream), ("scan", backfill)):
            records = [r for s, r in batch if s == source]
            if records:
                assert pipeline.process(records).dead_lettered == 0
    with engine.connect() as conn:
        live, logged = model.read(conn)
    assert live == model.expected(final)
    assert logged == sum(1 for s, _ in events if s == "stream")  # scan rows are not changes
