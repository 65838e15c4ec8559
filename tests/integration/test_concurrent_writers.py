"""Several real ``ddbcdc apply`` processes over a few hot keys converge, exactly, every time.

Each round generates a valid history (delete-then-reinsert, same-microsecond changes), hands
every record to one or two of four appliers, shuffled, and starts the four at once with small
batches, so their transactions interleave on the same keys. Every applier must exit 0 (no
deadlock, nothing dead-lettered) and PostgreSQL must hold exactly the history's final state:
live rows, one versions row per key, every change once in the change log.

The same runs over the single-table ``shop`` (a routed mapping), entity changes moving items
between tables. Two deterministic interleavings pin down the race the versions row closes: a REMOVE
committing while an older INSERT of the same key is in flight, and the other way round.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
import sqlalchemy as sa

from change_records import History, generate_history, record
from ddbcdc.pipeline import Pipeline, SourceRecord
from ddbcdc.schema.mapping import load_mappings, mapping_document
from shop_records import generate, logged_count, shop_mapping, table_state, versions_state

ROOT = Path(__file__).resolve().parents[2]
MAPPINGS_DIR = ROOT / "schemas" / "tables"
MAPPINGS = load_mappings(MAPPINGS_DIR)
DDBCDC = str(Path(sys.executable).parent / "ddbcdc")
US = 1_700_000_000_000_000


@pytest.fixture
def db(fresh_database: Callable[..., AbstractContextManager[str]]) -> Iterator[str]:
    with fresh_database("t_concurrent", mappings=MAPPINGS) as url:
        yield url


def state(url: str) -> tuple[dict[int, str], dict[int, bool], int]:
    """Live rows (userid -> first_name), versions rows (userid -> deleted), log size."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        live = dict(conn.execute(sa.text("SELECT userid, first_name FROM customers")).all())
        versions = dict(
            conn.execute(
                sa.text("SELECT userid, _ddbcdc_deleted FROM ddbcdc_versions__customers")
            ).all()
        )
        logged = conn.execute(sa.text("SELECT count(*) FROM ddbcdc_changes__customers")).scalar()
    engine.dispose()
    return live, versions, int(logged or 0)


def expected(history: History) -> tuple[dict[int, str], dict[int, bool], int]:
    versions = {k: False for k in history.final} | {k: True for k in history.deleted}
    return history.final, versions, len(history.records)


def run_appliers(
    url: str, parts: list[list[bytes]], tmp_path: Path, mappings_dir: Path = MAPPINGS_DIR
) -> list[str]:
    env = {**os.environ, "DATABASE_URL": url, "DDBCDC_MAPPINGS_DIR": str(mappings_dir)}
    procs = []
    for index, part in enumerate(parts):
        path = tmp_path / f"part{index}.jsonl"
        path.write_bytes(b"\n".join(part) + b"\n")
        batch = str(3 + index)  # different batch sizes: different transaction boundaries
        procs.append(
            subprocess.Popen(
                [DDBCDC, "apply", str(path), "--batch-size", batch, "--json"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"applier failed ({proc.returncode}): {err[-2000:]}"
        assert '"dead_lettered": 0' in out, out
        outputs.append(out)
    return outputs


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_concurrent_appliers_converge_exactly(db: str, tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    history = generate_history(rng, keys=range(6), steps=900, start_us=US, prefix=f"s{seed}")
    run_appliers(db, history.split(rng, 4), tmp_path)
    assert state(db) == expected(history)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_concurrent_appliers_converge_exactly_over_routes(
    fresh_database: Callable[..., AbstractContextManager[str]], tmp_path: Path, seed: int
) -> None:
    """The same over the single-table shop: items move between route tables as their
    entity attribute changes, while four appliers race on the same keys."""
    shop = shop_mapping(logged=True)
    mappings_dir = tmp_path / "mappings"
    mappings_dir.mkdir()
    (mappings_dir / "shop.json").write_text(json.dumps(mapping_document(shop)))
    rng = random.Random(seed)
    history = generate(rng, steps=600, start_us=US, prefix=f"s{seed}")
    parts = [[r for r in part] for part in split(history.records, rng, 4)]
    with fresh_database("t_concurrent_routes", mappings=(shop,)) as url:
        run_appliers(url, parts, tmp_path, mappings_dir)
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            tables, versions, logged = table_state(conn), versions_state(conn), logged_count(conn)
        engine.dispose()
    assert tables == history.expected()
    assert versions == history.routes()
    assert logged == len(history.records)


def split(records: list[bytes], rng: random.Random, parts: int) -> list[list[bytes]]:
    """As :meth:`History.split`: every record to one applier, some to two, shuffled."""
    return History(records=records).split(rng, parts)


def _pipeline(url: str) -> Pipeline:
    return Pipeline(engine=sa.create_engine(url), mappings=MAPPINGS)


def _interleave(url: str, first: bytes, second: bytes) -> None:
    """Apply ``first`` in a transaction left open while ``second`` is applied by another
    connection (which must wait for it), then commit ``first``."""
    holder, other = _pipeline(url), _pipeline(url)
    prepared = holder.prepare([SourceRecord(first)])
    done = threading.Event()
    errors: list[BaseException] = []

    def apply_second() -> None:
        try:
            other.process([SourceRecord(second)])
        except BaseException as exc:
            errors.append(exc)
        done.set()

    with holder.engine.begin() as conn:
        holder.materializer.apply(conn, prepared.changes)
        thread = threading.Thread(target=apply_second)
        thread.start()
        assert not done.wait(1.0), "the second writer did not wait for the first"
    thread.join(timeout=30)
    assert done.is_set() and not errors, errors
    holder.close()
    other.close()


def test_remove_committing_first_is_not_undone_by_an_older_insert_in_flight(db: str) -> None:
    key = {"userid": 1}
    remove = record("REMOVE", key, US + 5, eid="b-remove")
    insert = record("INSERT", key, US, image={"first_name": "old"}, eid="a-insert")
    _interleave(db, insert, remove)  # INSERT@t open while REMOVE@t+5 commits after it
    live, versions, _ = state(db)
    assert live == {} and versions == {1: True}


def test_older_modify_waits_behind_an_uncommitted_newer_remove(db: str) -> None:
    key = {"userid": 2}
    insert = record("INSERT", key, US, image={"first_name": "v1"}, eid="a")
    first = _pipeline(db)
    first.process([SourceRecord(insert)])
    first.close()
    remove = record("REMOVE", key, US + 10, eid="c")
    modify = record("MODIFY", key, US + 5, image={"first_name": "late"}, eid="b")
    _interleave(db, remove, modify)
    live, versions, _ = state(db)
    assert live == {} and versions == {2: True}
