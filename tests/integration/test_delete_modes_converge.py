"""The version rule with soft deletes and TTL expiry kept: any order converges, exactly.

Histories as DynamoDB writes them (REMOVEs carry the item's last image, some are TTL
expiries; delete-then-reinsert; same-microsecond changes), delivered in any order, with
duplicates and any batch split, through the real materializer, for every combination of
``deletes`` and ``ttl_deletes``: the live table ends with each live item, each kept row
holding its item's last image (marked with the REMOVE's time when soft), nothing else; one
versions row per key (a tombstone where the last change removed the item); every change
logged once with its cause. Then concurrent ``ddbcdc apply`` processes over a few hot keys,
and a TTL expiry racing a user's update of the same item, both ways round.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from change_records import History, generate_history, record
from ddbcdc.pipeline import Pipeline, SourceRecord
from ddbcdc.schema.deletes import DeletePolicy
from ddbcdc.schema.mapping import TableMapping, load_mappings, mapping_document
from ddbcdc.schema.tables import DELETED_AT, REMOVED_BY, MappedTables, mapped_tables

ROOT = Path(__file__).resolve().parents[2]
CUSTOMERS = load_mappings(ROOT / "schemas" / "tables")[0]
POLICIES = [DeletePolicy(d, t) for d in ("hard", "soft") for t in ("delete", "soft", "keep")]  # type: ignore[arg-type]
US = 1_700_000_000_000_000
DDBCDC = str(Path(sys.executable).parent / "ddbcdc")


def _mapping(policy: DeletePolicy) -> TableMapping:
    return replace(CUSTOMERS, policy=policy)


def _name(policy: DeletePolicy) -> str:
    return f"{policy.deletes}-{policy.ttl_deletes}"


@pytest.fixture(scope="module")
def databases(
    fresh_database: Callable[..., AbstractContextManager[str]],
) -> Iterator[dict[DeletePolicy, sa.Engine]]:
    """A database per policy, each with the customers mapping in that policy."""
    with contextlib_exit() as stack:
        engines = {}
        for policy in POLICIES:
            url = stack.enter_context(fresh_database("t_converge", mappings=(_mapping(policy),)))
            engines[policy] = sa.create_engine(url)
        yield engines
        for engine in engines.values():
            engine.dispose()


def contextlib_exit() -> Any:
    import contextlib

    return contextlib.ExitStack()


def _tables(policy: DeletePolicy) -> MappedTables:
    return mapped_tables([_mapping(policy)])["customers"]


def clear(engine: sa.Engine, tables: MappedTables) -> None:
    with engine.begin() as conn:
        for table in tables.all:
            conn.execute(sa.delete(table))


def at_us(moment: datetime | None) -> int | None:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return None if moment is None else (moment - epoch) // timedelta(microseconds=1)


def state(engine: sa.Engine, tables: MappedTables) -> tuple[Any, ...]:
    """(userid -> (first_name, marked at), userid -> deleted, event id -> cause)."""
    live, ver, log = tables.live, tables.versions, tables.changes
    assert log is not None
    marked = live.c[DELETED_AT] if DELETED_AT in live.c else sa.null()
    with engine.connect() as conn:
        rows = {
            r[0]: (r[1], at_us(r[2]))
            for r in conn.execute(sa.select(live.c.userid, live.c.first_name, marked))
        }
        versions = dict(conn.execute(sa.select(ver.c.userid, ver.c._ddbcdc_deleted)).all())
        causes = dict(conn.execute(sa.select(log.c._ddbcdc_event_id, log.c[REMOVED_BY])).all())
    return rows, versions, causes


def expected(history: History, policy: DeletePolicy) -> tuple[Any, ...]:
    versions = {k: False for k in history.final} | {k: True for k in history.deleted}
    causes = {}
    for data in history.records:
        doc = json.loads(data)
        cause = None
        if doc["eventName"] == "REMOVE":
            cause = "ttl" if doc["userIdentity"] else "user"
        causes[doc["eventID"]] = cause
    return history.rows(policy), versions, causes


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.data(),
    policy=st.sampled_from(POLICIES),
    seed=st.integers(0, 2**32 - 1),
    steps=st.integers(1, 24),
)
def test_any_order_duplication_and_split_converges_in_every_mode(
    databases: dict[DeletePolicy, sa.Engine],
    data: st.DataObject,
    policy: DeletePolicy,
    seed: int,
    steps: int,
) -> None:
    rng = random.Random(seed)
    keys = range(data.draw(st.integers(1, 4)))
    history = generate_history(
        rng, keys=keys, steps=steps, start_us=US, old_images=True, ttl_share=0.5
    )
    records = [SourceRecord(r) for r in history.records]
    dupes = data.draw(st.lists(st.sampled_from(records), max_size=len(records)))
    stream = data.draw(st.permutations(records + dupes))
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(stream) - 1)), max_size=4)))
    engine, tables = databases[policy], _tables(policy)
    clear(engine, tables)
    pipeline = Pipeline(engine=engine, mappings=[tables.mapping])
    for start, end in itertools.pairwise([0, *cuts, len(stream)]):
        result = pipeline.process(stream[start:end])
        assert result.dead_lettered == 0
        assert result.received == result.upserted + result.deleted + result.stale
    assert state(engine, tables) == expected(history, policy)


# -- concurrent appliers -------------------------------------------------------------------


def _mappings_dir(tmp_path: Path, policy: DeletePolicy) -> Path:
    folder = tmp_path / "mappings"
    folder.mkdir()
    document = mapping_document(_mapping(policy))
    (folder / "customers.json").write_text(json.dumps(document))
    return folder


@pytest.mark.slow
@pytest.mark.parametrize(
    "policy",
    [DeletePolicy("soft", "keep"), DeletePolicy("hard", "soft")],
    ids=_name,
)
def test_concurrent_appliers_converge_in_every_mode(
    fresh_database: Callable[..., AbstractContextManager[str]],
    tmp_path: Path,
    policy: DeletePolicy,
) -> None:
    rng = random.Random(11)
    history = generate_history(
        rng, keys=range(6), steps=600, start_us=US, old_images=True, ttl_share=0.5
    )
    folder = _mappings_dir(tmp_path, policy)
    with fresh_database("t_concurrent_modes", mappings=(_mapping(policy),)) as url:
        env = {**os.environ, "DATABASE_URL": url, "DDBCDC_MAPPINGS_DIR": str(folder)}
        procs = []
        for index, part in enumerate(history.split(rng, 4)):
            path = tmp_path / f"part{index}.jsonl"
            path.write_bytes(b"\n".join(part) + b"\n")
            argv = [DDBCDC, "apply", str(path), "--batch-size", str(3 + index), "--json"]
            procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True))
        for proc in procs:
            out, _ = proc.communicate(timeout=300)
            assert proc.returncode == 0 and '"dead_lettered": 0' in out, out
        engine = sa.create_engine(url)
        try:
            assert state(engine, _tables(policy)) == expected(history, policy)
        finally:
            engine.dispose()


# -- a TTL expiry racing a user's update ---------------------------------------------------


def _race(engine: sa.Engine, mapping: TableMapping, first: bytes, second: bytes) -> None:
    """Apply ``first`` in a transaction left open while another connection applies
    ``second`` (it must wait for the key), then commit ``first``."""
    holder = Pipeline(engine=engine, mappings=[mapping])
    other = Pipeline(engine=engine, mappings=[mapping])
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


@pytest.mark.parametrize("expiry_first", [True, False], ids=["expiry-first", "update-first"])
@pytest.mark.parametrize("expired_last", [True, False], ids=["expired", "updated"])
@pytest.mark.parametrize(
    "policy", [DeletePolicy("hard", "keep"), DeletePolicy("soft", "delete")], ids=_name
)
def test_a_ttl_expiry_racing_a_users_update(
    databases: dict[DeletePolicy, sa.Engine],
    policy: DeletePolicy,
    expired_last: bool,
    expiry_first: bool,
) -> None:
    """The item expires (REMOVE by the TTL) while a user updates it: whichever DynamoDB
    applied last is the newer version and wins, whichever reaches PostgreSQL first."""
    engine, tables = databases[policy], _tables(policy)
    clear(engine, tables)
    key = {"userid": 3}
    Pipeline(engine=engine, mappings=[tables.mapping]).process(
        [SourceRecord(record("INSERT", key, US, image={"first_name": "old"}, eid="a"))]
    )
    if expired_last:  # the update, then the expiry of the updated item
        update = record("MODIFY", key, US + 5, image={"first_name": "new"}, eid="b")
        expiry = record("REMOVE", key, US + 9, eid="c", old_image={"first_name": "new"}, ttl=True)
    else:  # the expiry, then the update re-creates the item
        expiry = record("REMOVE", key, US + 5, eid="b", old_image={"first_name": "old"}, ttl=True)
        update = record("INSERT", key, US + 9, image={"first_name": "new"}, eid="c")
    first, second = (expiry, update) if expiry_first else (update, expiry)
    _race(engine, tables.mapping, first, second)
    rows, versions, _ = state(engine, tables)
    marked = US + 9 if expired_last and policy.ttl_mode == "soft" else None
    assert rows == {3: ("new", marked)}
    assert versions == {3: expired_last}
