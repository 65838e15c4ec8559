"""A migrate backfill and a batch of writes lock keys in one order: they never deadlock.

``ddbcdc migrate``'s column backfill locks a batch of live rows in key order; a batch of
``ddbcdc apply`` claims its keys' versions rows in key order, then upserts live rows and
deletes others in statements of their own. With the backfill waiting on a row held by a third
session, a batch that upserts key 9 and then deletes key 1 (which the backfill holds) would
wait for the backfill while the backfill, released, waits for key 9: a deadlock, whichever
PostgreSQL then aborts. The backfill takes its keys' versions rows first, as every writer
does: the batch waits for the backfill, and both commit. Two real connections besides the
third: both commands as subprocesses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from evolution_support import US, shipped, write_items

from change_records import record
from ddbcdc.schema.mapping import load_mappings

DDBCDC = str(Path(sys.executable).parent / "ddbcdc")


@pytest.fixture
def env(
    fresh_database: Callable[..., AbstractContextManager[str]], tmp_path: Path
) -> Iterator[dict[str, str]]:
    with fresh_database("t_fill_locks") as url:
        environ = {**os.environ, "DATABASE_URL": url, "DDBCDC_MAPPINGS_DIR": str(tmp_path)}
        environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        yield environ


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DDBCDC, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def start(env: dict[str, str], tmp_path: Path, name: str, *args: str) -> subprocess.Popen[str]:
    """``ddbcdc ARGS`` started, its output in ``name``.out and .err."""
    with (tmp_path / f"{name}.out").open("w") as out, (tmp_path / f"{name}.err").open("w") as err:
        return subprocess.Popen([DDBCDC, *args], env=env, stdout=out, stderr=err, text=True)


def waiting(engine: sa.Engine, count: int) -> None:
    """Until ``count`` sessions of the database wait for a lock."""
    query = sa.text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    deadline = time.monotonic() + 60
    while True:
        with engine.connect() as conn:
            if conn.execute(query).scalar() == count:
                return
        assert time.monotonic() < deadline, f"{count} sessions never waited for a lock"
        time.sleep(0.05)


def deadlocks(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        query = "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
        return int(conn.execute(sa.text(query)).scalar_one())


def test_a_backfill_and_a_batch_never_deadlock(env: dict[str, str], tmp_path: Path) -> None:
    doc: dict[str, Any] = shipped()
    (tmp_path / "customers.json").write_text(json.dumps(doc))
    assert run(env, "migrate").returncode == 0
    engine = sa.create_engine(env["DATABASE_URL"])
    (v1,) = load_mappings(tmp_path)
    write_items(engine, v1, {k: {"first_name": f"n{k}", "city": f"c{k}"} for k in range(1, 11)})
    doc["columns"].append({"name": "city", "source": "city", "type": "text"})
    (tmp_path / "customers.json").write_text(json.dumps(doc))
    assert run(env, "migrate").returncode == 0  # adds city and fills it
    with engine.begin() as conn:  # the backfill again, from the start: it locks every row
        conn.execute(sa.text("UPDATE ddbcdc_backfills SET finished_at = NULL, after_key = NULL"))
    changes = tmp_path / "changes.jsonl"
    modify = record("MODIFY", {"userid": 9}, US + 10, image={"city": "New"}, eid="m9")
    remove = record("REMOVE", {"userid": 1}, US + 11, eid="r1")
    changes.write_bytes(modify + b"\n" + remove + b"\n")
    before = deadlocks(engine)

    with engine.connect() as third:
        third.execute(sa.text("SELECT 1 FROM customers WHERE userid = 5 FOR UPDATE"))
        backfill = start(env, tmp_path, "migrate", "migrate", "--batch-size", "100")
        waiting(engine, 1)  # the backfill holds keys 1..4 and waits for 5
        batch = start(env, tmp_path, "apply", "--log-level", "INFO", "apply", str(changes))
        waiting(engine, 2)  # the batch waits for the backfill
        third.rollback()
        assert backfill.wait(timeout=120) == 0, (tmp_path / "migrate.err").read_text()
        assert batch.wait(timeout=120) == 0, (tmp_path / "apply.err").read_text()

    assert deadlocks(engine) == before
    assert "collided" not in (tmp_path / "apply.err").read_text()
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT userid, city FROM customers ORDER BY 1")).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [(k, "New" if k == 9 else f"c{k}") for k in range(2, 11)]
