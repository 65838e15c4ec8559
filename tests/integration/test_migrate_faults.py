"""``ddbcdc migrate`` when PostgreSQL refuses part of the column backfill: a row a trigger
refuses is a dead letter and the rest is filled; a lock that does not come is retried, then
reported in one line (exit 2), and the next run goes on. No traceback, no item value on
stderr, whatever engine the code makes."""

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
from evolution_support import shipped, write_items

from ddbcdc.db import create_engine
from ddbcdc.migrate.run import downgrade
from ddbcdc.migrate.versions import HEAD_REVISION
from ddbcdc.schema.mapping import load_mappings

ROOT = Path(__file__).resolve().parents[2]
SECRET = "ssn-987-65-4320"


@pytest.fixture
def db(fresh_database: Callable[..., AbstractContextManager[str]]) -> Iterator[str]:
    with fresh_database("t_migfault") as url:
        yield url


@pytest.fixture
def engine(db: str) -> Iterator[sa.Engine]:
    made = sa.create_engine(db)
    yield made
    made.dispose()


def folder(path: Path, *, city: bool) -> Path:
    doc = shipped()
    if city:
        doc["columns"].append({"name": "city", "type": "text"})
    path.mkdir(parents=True, exist_ok=True)
    (path / "customers.json").write_text(json.dumps(doc))
    return path


def migrate(db: str, mappings: Path, **env: str) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "ddbcdc.cli", "migrate", "--batch-size", "3"],
        env={**os.environ, "DATABASE_URL": db, "DDBCDC_MAPPINGS_DIR": str(mappings), **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def loaded(db: str, engine: sa.Engine, tmp_path: Path) -> Path:
    """Customers 1..7 with a kept ``city`` (4: "Bad") and ``ssn``; a mapping with ``city``."""
    old = folder(tmp_path / "old", city=False)
    assert migrate(db, old).returncode == 0
    (mapping,) = load_mappings(old)
    items = {
        n: {"first_name": f"n{n}", "city": "Bad" if n == 4 else f"c{n}", "ssn": SECRET}
        for n in range(1, 8)
    }
    write_items(engine, mapping, items)
    return folder(tmp_path / "new", city=True)


def cities(engine: sa.Engine) -> dict[int, str | None]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT userid, city FROM customers ORDER BY 1")).all()
    return {r[0]: r[1] for r in rows}


def pending(engine: sa.Engine) -> list[tuple[Any, ...]]:
    query = (
        "SELECT stage, error_column, error, convert_from(payload, 'UTF8') "
        "FROM ddbcdc_dead_letters "
        "WHERE replayed_at IS NULL ORDER BY id"
    )
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(query)).all()]


def test_a_row_a_trigger_refuses_is_a_dead_letter_and_the_rest_is_filled(
    db: str, engine: sa.Engine, tmp_path: Path
) -> None:
    new = loaded(db, engine, tmp_path)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE FUNCTION refuse_bad() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.city = 'Bad' THEN RAISE EXCEPTION 'city refused'; END IF; RETURN NEW; "
            "END $$"
        )
        conn.exec_driver_sql(
            "CREATE TRIGGER refuse_bad BEFORE UPDATE ON customers FOR EACH ROW "
            "EXECUTE FUNCTION refuse_bad()"
        )
    done = migrate(db, new)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Traceback" not in output and SECRET not in output
    assert "7 rows, 6 filled, 1 dead letters; done" in done.stdout
    assert cities(engine) == {n: None if n == 4 else f"c{n}" for n in range(1, 8)}
    [(stage, column, error, payload)] = pending(engine)
    assert stage == "backfill" and column is None
    assert "PostgreSQL refused the row's update: SQLSTATE P0001 RaiseException" in error
    assert json.loads(payload)["key"] == {"userid": {"N": "4"}} and SECRET not in error

    again = migrate(db, new)  # a rerun goes on: nothing left, the dead letter kept once
    assert again.returncode == 0, again.stderr
    assert len(pending(engine)) == 1

    with engine.begin() as conn:  # the trigger fixed: the replay fills the row
        conn.exec_driver_sql("DROP TRIGGER refuse_bad ON customers")
    replay = subprocess.run(
        [sys.executable, "-m", "ddbcdc.cli", "dlq", "replay"],
        env={**os.environ, "DATABASE_URL": db, "DDBCDC_MAPPINGS_DIR": str(new)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert replay.returncode == 0, replay.stderr
    assert cities(engine)[4] == "Bad" and pending(engine) == []


def test_a_lock_timeout_is_retried_then_reported_and_the_rerun_goes_on(
    db: str, engine: sa.Engine, tmp_path: Path
) -> None:
    new = loaded(db, engine, tmp_path)
    with engine.begin() as conn:  # the trigger writes a row another transaction holds
        conn.exec_driver_sql("CREATE TABLE audit (id int PRIMARY KEY, n int)")
        conn.exec_driver_sql("INSERT INTO audit VALUES (1, 0)")
        conn.exec_driver_sql(
            "CREATE FUNCTION audited() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.userid = 5 THEN UPDATE audit SET n = n + 1 WHERE id = 1; END IF; "
            "RETURN NEW; END $$"
        )
        conn.exec_driver_sql(
            "CREATE TRIGGER audited BEFORE UPDATE ON customers FOR EACH ROW "
            "EXECUTE FUNCTION audited()"
        )
    holder = sa.create_engine(db)
    try:
        with holder.connect() as conn, conn.begin():
            conn.exec_driver_sql("SELECT * FROM audit WHERE id = 1 FOR UPDATE")
            stopped = migrate(db, new, PGOPTIONS="-c lock_timeout=100")
    finally:
        holder.dispose()
    lines = [line for line in stopped.stderr.splitlines() if not line.startswith("  backfill")]
    assert stopped.returncode == 2, stopped.stderr
    assert lines == [
        "ddbcdc migrate: backfill of customers stopped: PostgreSQL lock_timeout in each of "
        "8 attempts: SQLSTATE 55P03 LockNotAvailable; a lock was not granted within "
        "lock_timeout"
    ]
    assert pending(engine) == []  # a lock timeout is no dead letter
    assert cities(engine) == {n: f"c{n}" if n <= 3 else None for n in range(1, 8)}

    resumed = migrate(db, new)
    assert resumed.returncode == 0, resumed.stderr
    assert "4 rows, 4 filled, 0 dead letters; done" in resumed.stdout  # after the first batch
    assert cities(engine) == {n: "Bad" if n == 4 else f"c{n}" for n in range(1, 8)}


def test_a_refused_statement_names_no_parameter_value(db: str) -> None:
    """The engines ddbcdc makes hide parameters; SQLAlchemy's own default shows them."""

    def refusal(made: sa.Engine) -> str:
        with pytest.raises(sa.exc.DBAPIError) as refused, made.begin() as conn:
            conn.execute(sa.text("SELECT CAST(:v AS text), 1 / 0"), {"v": SECRET})
        made.dispose()
        return f"{refused.value}\n{refused.value!r}"

    assert SECRET in refusal(sa.create_engine(db))  # what the check guards against
    assert SECRET not in refusal(create_engine(db))
    assert SECRET not in refusal(create_engine(db, pooled=False, pre_ping=True))


def test_two_migrations_at_once_run_one_after_the_other(db: str, tmp_path: Path) -> None:
    """Two hosts deploying a release both run ``ddbcdc migrate`` on a schema a revision
    behind: the second waits for the first and finds nothing left to do, instead of running
    the same DDL and failing on PostgreSQL's catalog."""
    mappings = folder(tmp_path / "m", city=False)
    assert migrate(db, mappings).returncode == 0
    engine = create_engine(db)
    downgrade(engine, revision="0008_removal_cause")
    command = [sys.executable, "-m", "ddbcdc.cli", "migrate"]
    env = {**os.environ, "DATABASE_URL": db, "DDBCDC_MAPPINGS_DIR": str(mappings)}
    waiting = sa.text("SELECT count(*) FROM pg_locks WHERE NOT granted")
    try:
        with engine.connect() as holder, holder.begin() as held:
            # The revision's table, created and not committed: both migrations reach it together.
            holder.exec_driver_sql("CREATE TABLE ddbcdc_shard_failures (x int)")
            runs = [
                subprocess.Popen(
                    command,
                    env=env,
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for _ in range(2)
            ]
            with engine.connect() as probe:
                deadline = time.monotonic() + 60
                while probe.execute(waiting).scalar() != 2:
                    assert time.monotonic() < deadline, "the migrations did not both wait"
                    assert all(run.poll() is None for run in runs)
                    time.sleep(0.05)
            held.rollback()
        outcomes = [(run.wait(timeout=120), *run.communicate()) for run in runs]
    finally:
        engine.dispose()
    for status, out, err in outcomes:
        assert (status, err) == (0, ""), (out, err)
    assert sorted(
        f"revisions: 0008_removal_cause -> {HEAD_REVISION}" in out for _, out, _ in outcomes
    ) == [False, True]


def test_a_read_only_database_is_named_in_one_line(db: str, tmp_path: Path) -> None:
    """A standby (or a role whose transactions are read-only): refused, saying why."""
    done = migrate(
        db, folder(tmp_path, city=False), PGOPTIONS="-c default_transaction_read_only=on"
    )
    assert (done.returncode, done.stderr) == (
        2,
        "ddbcdc migrate: PostgreSQL: SQLSTATE 25006 ReadOnlySqlTransaction; the database is "
        "read-only (a standby, or default_transaction_read_only on)\n",
    )
