"""A table that already holds items, backfilled while the worker and the loader run.

Items are written before the table streams (no stream record will ever bring them). Then the
stream is wired, the real ``ddbcdc worker`` (KCL daemon, shard processors) starts, and the
loader writes INSERT/MODIFY/REMOVE (delete-then-reinsert among them) over the existing items
and new ones, while ``ddbcdc snapshot`` scans the table; the snapshot is SIGKILLed once and
resumed. ``ddbcdc verify`` runs while the loader still writes and must find no drift. After
the load, PostgreSQL equals a Scan; drift put in by hand is found and repaired with the
worker running (its shards idle).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from test_worker_e2e import Worker, leases, wait_for

from backfill_support import BackfillTable, backfill_table
from ddbcdc.aws import clients as aws
from ddbcdc.aws.provision import ProvisionOptions, set_up
from ddbcdc.load.plan import LoadOptions, plan_operations
from ddbcdc.load.writer import LoadSummary, run_load
from ddbcdc.local.stack import LocalStack
from ddbcdc.verify.compare import compare

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
COLUMNS = [
    {"name": "userid", "type": "bigint", "required": True},
    {"name": "first_name", "type": "text", "rules": ["trim"]},
    {"name": "last_name", "type": "text", "rules": ["trim"]},
    {"name": "phone", "type": "text", "rules": ["digits_only"]},
]
EXISTING = 1500


@pytest.fixture
def table(
    local_stack: LocalStack,
    fresh_database: Callable[..., AbstractContextManager[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[BackfillTable]:
    for name, value in local_stack.env.items():
        monkeypatch.setenv(name, value)
    with backfill_table(local_stack, fresh_database, tmp_path, columns=COLUMNS) as made:
        made.env.update(
            DDBCDC_STREAM_NAME=f"{made.name}-stream",
            DDBCDC_CLOCK_SKEW_MARGIN="PT2S",
            DDBCDC_FAILOVER_TIME_MS="3000",
            DDBCDC_IDLE_TIME_BETWEEN_READS_MS="200",
        )
        yield made


def ddbcdc(
    table: BackfillTable, *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ddbcdc.cli", *args],
        env={**os.environ, **table.env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def load(table: BackfillTable, options: LoadOptions, existing: dict[int, Any]) -> LoadSummary:
    client = aws.client("dynamodb", table.stack.settings(), max_attempts=1)
    operations = list(plan_operations(options, existing=existing))
    summary = run_load(client, options, operations=operations)
    assert summary.errors == 0
    return summary


def equal(table: BackfillTable) -> bool:
    engine = sa.create_engine(table.database_url)
    try:
        return compare(table.client(), engine, table.mapping).matches
    finally:
        engine.dispose()


def snapshot_killed_once_then_resumed(table: BackfillTable, log: Path) -> None:
    argv = [sys.executable, "-m", "ddbcdc.cli", "snapshot", "--segments", "3", "--page-size"]
    argv += ["50", "--max-items-per-second", "150", "--no-progress"]
    with log.open("wb") as sink:
        process = subprocess.Popen(argv, env={**os.environ, **table.env}, cwd=ROOT, stderr=sink)
    committed = "SELECT coalesce(sum(items), 0) FROM ddbcdc_snapshot_segments"
    wait_for(
        "the snapshot to commit pages",
        lambda: process.poll() is not None or table.query(committed)[0][0] >= 300,
        120,
        every=0.1,
    )
    assert process.poll() is None, log.read_text()
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert table.query("SELECT status FROM ddbcdc_snapshots") == [("running",)]
    resumed = ddbcdc(table, "snapshot", "--resume", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert table.query("SELECT status FROM ddbcdc_snapshots") == [("done",)]


def test_snapshot_worker_and_loader_converge_and_verify_tells_drift_from_changes(
    table: BackfillTable, tmp_path: Path
) -> None:
    seed = LoadOptions(table=table.name, count=EXISTING, keys=EXISTING, mix={"insert": 1}, seed=3)
    load(table, seed, {})  # before the table streams: only a snapshot can bring these
    existing = {
        int(i["userid"]["N"]): i for i in table.client().scan(TableName=table.name)["Items"]
    }
    set_up(
        table.client(),
        table.client("kinesis"),
        ProvisionOptions(table=table.name, stream=table.env["DDBCDC_STREAM_NAME"], local=True),
    )
    application = table.env["DDBCDC_APPLICATION_NAME"]
    worker = Worker({**os.environ, **table.env}, tmp_path / "worker.log")
    loading = threading.Thread(
        target=load,
        args=(
            table,
            LoadOptions(
                table=table.name,
                count=2400,
                keys=2000,
                mix={"insert": 35, "modify": 40, "remove": 25},
                seed=11,
                rate=40,
            ),
            {k: {"userid": k} for k in existing},
        ),
    )
    try:
        wait_for(
            "the worker to hold every lease",
            lambda: (
                len(leases(table.stack, application)) == 2
                and all(v["owner"] for v in leases(table.stack, application).values())
            ),
            150,
            worker,
        )
        loading.start()
        snapshot_killed_once_then_resumed(table, tmp_path / "snapshot.log")
        assert loading.is_alive(), "the load ended before verify: make it longer"
        checked = ddbcdc(table, "verify", "--json", "--no-progress", "--settle-timeout", "120")
        report = json.loads(checked.stdout)
        assert checked.returncode == 0, (checked.stdout, checked.stderr)
        assert report["drift"] is False and report["items"] > EXISTING // 2
        assert report["unconfirmed"] == 0
        assert report["suspects"] == report["changed_during_run"] + report["unsettled"]
        loading.join(timeout=180)
        assert not loading.is_alive()
        wait_for("PostgreSQL to equal the table", lambda: equal(table), 180, worker, every=2)
        assert table.query("SELECT count(*) FROM ddbcdc_dead_letters") == [(0,)]

        t = f'"{table.name}"'
        alive = [r[0] for r in table.query(f"SELECT userid FROM {t} ORDER BY userid LIMIT 2")]
        table.execute(f"UPDATE {t} SET first_name = 'hand edit' WHERE userid = :k", k=alive[0])
        table.execute(f"DELETE FROM {t} WHERE userid = :k", k=alive[1])
        table.execute(
            f"INSERT INTO {t} (userid, _ddbcdc_version_us, _ddbcdc_event_id) "
            "VALUES (777777, 1, 'by hand')"
        )
        repaired = ddbcdc(table, "verify", "--json", "--no-progress", "--repair")
        found = json.loads(repaired.stdout)
        assert repaired.returncode == 1, repaired.stderr
        assert (found["missing"], found["extra"], found["different"], found["repaired"]) == (
            1,
            1,
            1,
            3,
        )
        assert equal(table)
        again = ddbcdc(table, "verify", "--no-progress")
        assert again.returncode == 0, again.stdout + again.stderr
    finally:
        code = worker.stop()
        loading.join(timeout=180)
    assert code == 0, worker.log_tail()
    assert "Traceback" not in worker.log_path.read_text(errors="replace")
