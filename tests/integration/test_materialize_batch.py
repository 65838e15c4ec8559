"""The fast batch path does exactly what the isolating path does; the isolating path fails
exactly the changes PostgreSQL refuses and applies every other one, as the fast path would
without them, whatever the refused keys' pattern."""

from __future__ import annotations

import random
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
from ddbcdc.materialize import Materializer, TableWriter, attempts
from ddbcdc.schema.deletes import DeletePolicy
from ddbcdc.schema.mapping import TableMapping, load_mappings
from ddbcdc.schema.tables import DELETED_AT

SHIPPED = load_mappings(Path(__file__).resolve().parents[2] / "schemas" / "tables")
CUSTOMERS = SHIPPED[0]
UNLOGGED = replace(
    CUSTOMERS, name="unlogged", source_table="unlogged", target_table="unlogged", change_log=False
)
# A user's delete keeps the row marked, a TTL expiry keeps it as it was.
KEEPING = replace(
    CUSTOMERS,
    name="keeping",
    source_table="keeping",
    target_table="keeping",
    policy=DeletePolicy(deletes="soft", ttl_deletes="keep"),
)
MAPPINGS = (CUSTOMERS, UNLOGGED, KEEPING)
IDS = ["change_log", "no_change_log", "deletes_kept"]


@pytest.fixture(scope="module")
def engine(fresh_database: Callable[..., AbstractContextManager[str]]) -> Iterator[sa.Engine]:
    """A migrated database of this module's own, with a mapping that keeps no change log."""
    with fresh_database("t_batch", mappings=MAPPINGS) as url:
        eng = sa.create_engine(url)
        yield eng
        eng.dispose()


def _change(mapping: TableMapping, spec: tuple[str, int, int, int | None, int]) -> CleanChange:
    event, userid, us, seq, eid = spec
    image = {"userid": userid, "first_name": f"n{us}", "phone": us}
    removed = event == "REMOVE"
    record = ChangeRecord(
        event_id=f"e{eid}-{event}-{userid}-{us}-{seq}",  # one id, one change
        event_name=event,
        table_name=mapping.source_table,
        aws_region="us-east-1",
        keys={"userid": userid},
        new_image=None if removed else image,
        old_image=image if removed and eid % 2 else None,  # a REMOVE's last image, or none
        approximate_creation=datetime.fromtimestamp(us, UTC),
        approximate_creation_us=us,
        size_bytes=1,
        is_ttl_delete=removed and eid % 3 == 0,
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
        columns = [c for c in table.columns if c.name == DELETED_AT or not c.name.endswith("_at")]
        state.append(sorted(conn.execute(sa.select(*columns)).all(), key=repr))
    return state


@pytest.mark.parametrize("mapping", MAPPINGS, ids=IDS)
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


REFUSE = "CHECK (first_name IS NULL OR first_name NOT LIKE 'BAD%')"


def _refusing(conn: sa.Connection, writer: TableWriter) -> None:
    """A constraint of the live table that refuses every first name starting with BAD."""
    live = writer.tables.live.name
    conn.execute(sa.text(f'ALTER TABLE "{live}" ADD CONSTRAINT no_bad {REFUSE}'))


def _bad(change: CleanChange) -> CleanChange:
    """The same change (another one: its own event id) with a first name that is refused."""
    assert change.row is not None
    event_id = f"{change.event_id}-bad"
    return change._replace(
        event_id=event_id,
        row={**change.row, "first_name": f"BAD{change.version[0]}"},
        version=(*change.version[:2], event_id),
    )


def _refused(changes: list[CleanChange], bad: set[str], earlier: list[CleanChange]) -> set[str]:
    """The model: per key, newest first, every refused change until one that is not, or
    one no newer than what the key holds already (it never reaches the live table)."""
    stored: dict[Any, Any] = {}
    for change in earlier:
        stored[change.key] = max(stored.get(change.key, change.version), change.version)
    by_key: dict[Any, dict[str, CleanChange]] = {}
    for change in changes:
        by_key.setdefault(change.key, {})[change.event_id] = change
    failed = set()
    for key, found in by_key.items():
        for change in sorted(found.values(), key=lambda c: c.version, reverse=True):
            if change.event_id not in bad or (key in stored and change.version <= stored[key]):
                break
            failed.add(change.event_id)
    return failed


def _isolated_equals_oracle(
    engine: sa.Engine, mapping: TableMapping, earlier: list[CleanChange], changes: list[CleanChange]
) -> None:
    """Isolating ``changes`` fails exactly the model's changes and leaves the state the fast
    path leaves with the batch without them."""
    materializer = Materializer([mapping])
    writer = materializer.writers[mapping.name]
    bad = {c.event_id for c in changes if c.row and str(c.row["first_name"]).startswith("BAD")}
    failed = _refused(changes, bad, earlier)
    with engine.connect() as conn, conn.begin():
        for table in writer.tables.all:
            conn.execute(sa.delete(table))
        _refusing(conn, writer)
        if earlier:
            materializer.apply(conn, earlier)
            writer.stage.clear(conn)
        attempt = conn.begin_nested()
        oracle = materializer.apply(conn, [c for c in changes if c.event_id not in failed])
        oracle_state = _state(conn, writer)
        attempt.rollback()
        isolated = materializer.apply_isolated(conn, changes)
        assert {c.event_id for c, _ in isolated.failed} == failed
        assert len(isolated.failed) == len(failed)
        assert all("SQLSTATE 23514" in reason and "no_bad" in reason for _, r in isolated.failed
                   for reason in [r])  # fmt: skip
        assert (isolated.upserted, isolated.deleted) == (oracle.upserted, oracle.deleted)
        assert isolated.upserted + isolated.deleted + isolated.stale + len(failed) == len(changes)
        assert oracle_state == _state(conn, writer)
        conn.rollback()


@pytest.mark.parametrize("mapping", MAPPINGS, ids=IDS)
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    before=st.lists(_spec, max_size=8),
    batch=st.lists(st.tuples(_spec, st.booleans()), min_size=1, max_size=14),
)
def test_isolating_fails_exactly_the_refused_changes(
    engine: sa.Engine, mapping: TableMapping, before: list[Any], batch: list[Any]
) -> None:
    earlier = [_change(mapping, s) for s in before]
    changes = [_change(mapping, s) for s, _ in batch]
    changes = [
        _bad(c) if refuse and c.row else c for c, (_, refuse) in zip(changes, batch, strict=True)
    ]
    changes += changes[: len(changes) // 3]  # the same changes delivered twice
    _isolated_equals_oracle(engine, mapping, earlier, changes)


def _many(mapping: TableMapping, keys: int, refused: Callable[[int], bool]) -> list[CleanChange]:
    """Two changes per key (an INSERT, then a MODIFY), the MODIFY refused where ``refused``
    says, plus the INSERT of every tenth key refused too."""
    changes = []
    for userid in range(keys):
        insert = _change(mapping, ("INSERT", userid, 10 + userid, None, 1))
        modify = _change(mapping, ("MODIFY", userid, 20_000 + userid, None, 2))
        both = refused(userid) and userid % 10 == 0
        changes += [_bad(insert) if both else insert, _bad(modify) if refused(userid) else modify]
    return changes


@pytest.mark.parametrize(
    "pattern",
    [
        lambda k: False,
        lambda k: True,
        lambda k: k == 0,
        lambda k: k == 499,
        lambda k: k % 2 == 0,
        lambda k: k % 37 == 5,
        lambda k: 100 <= k < 180,
        lambda k: (k * 7919) % 101 < 3,
    ],
    ids=["none", "all", "first", "last", "every_other", "sparse", "a_run", "scattered"],
)
@pytest.mark.parametrize("call_keys", [attempts.CALL_KEYS, 37])
def test_isolating_many_keys(
    engine: sa.Engine,
    pattern: Callable[[int], bool],
    call_keys: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(attempts, "CALL_KEYS", call_keys)  # keys per call of the function
    changes = _many(CUSTOMERS, 500, pattern)
    random.Random(7).shuffle(changes)
    _isolated_equals_oracle(engine, CUSTOMERS, [], changes)
