"""The fast batch path does exactly what the isolating path (savepoints, halves, keys) does."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ddbcdc.cleanse import CleanChange, Cleanser
from ddbcdc.decode.record import ChangeRecord
from ddbcdc.materialize import Materializer, TableWriter
from ddbcdc.schema.mapping import TableMapping, load_mappings

SHIPPED = load_mappings(Path(__file__).resolve().parents[2] / "schemas" / "tables")
CUSTOMERS = SHIPPED[0]
UNLOGGED = replace(
    CUSTOMERS, name="unlogged", source_table="unlogged", target_table="unlogged", change_log=False
)
MAPPINGS = (CUSTOMERS, UNLOGGED)


@pytest.fixture(scope="module")
def engine(fresh_database: Callable[..., AbstractContextManager[str]]) -> Iterator[sa.Engine]:
    """A migrated database of this module's own, with a mapping that keeps no change log."""
    with fresh_database("t_batch", mappings=MAPPINGS) as url:
        eng = sa.create_engine(url)
        yield eng
        eng.dispose()


def _change(mapping: TableMapping, spec: tuple[str, int, int, int | None, int]) -> CleanChange:
    event, userid, us, seq, eid = spec
    image = {"userid": userid, "first_name": f"n{us}", "phone": us} if event != "REMOVE" else None
    record = ChangeRecord(
        event_id=f"e{eid}-{event}-{userid}-{us}-{seq}",  # one id, one change
        event_name=event,
        table_name=mapping.source_table,
        aws_region="us-east-1",
        keys={"userid": userid},
        new_image=image,
        old_image=None,
        approximate_creation=datetime.fromtimestamp(us, UTC),
        approximate_creation_us=us,
        size_bytes=1,
        is_ttl_delete=False,
        shard_id="s",
        sequence_number=None if seq is None else str(seq),
    )
    return Cleanser(mapping).cleanse(record)


_spec = st.tuples(
    st.sampled_from(["INSERT", "MODIFY", "REMOVE"]),
    st.integers(0, 3),
    st.integers(1, 4),
    st.none() | st.integers(1, 3),
    st.integers(0, 40),
)


def _state(conn: sa.Connection, writer: TableWriter) -> list[Any]:
    state = []
    for table in writer.tables.all:
        columns = [c for c in table.columns if not c.name.endswith("_at")]
        state.append(sorted(conn.execute(sa.select(*columns)).all(), key=repr))
    return state


@pytest.mark.parametrize("mapping", MAPPINGS, ids=["change_log", "no_change_log"])
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(before=st.lists(_spec, max_size=8), batch=st.lists(_spec, min_size=1, max_size=12))
def test_fast_path_equals_isolating_path(
    engine: sa.Engine, mapping: TableMapping, before: list[Any], batch: list[Any]
) -> None:
    materializer = Materializer([mapping])
    writer = materializer.writers[mapping.name]
    earlier = [_change(mapping, s) for s in before]
    changes = [_change(mapping, s) for s in batch]
    changes += changes[: len(changes) // 3]  # the same changes delivered twice
    with engine.connect() as conn, conn.begin():
        for table in writer.tables.all:
            conn.execute(sa.delete(table))
        if earlier:
            materializer.apply(conn, earlier)
            writer.stage.clear(conn)
        attempt = conn.begin_nested()
        fast = materializer.apply(conn, changes)
        fast_state = _state(conn, writer)
        attempt.rollback()
        isolated = materializer.apply_isolated(conn, changes)
        assert fast == isolated
        assert fast.upserted + fast.deleted + fast.stale == len(changes) and not fast.failed
        assert fast_state == _state(conn, writer)
        conn.rollback()
