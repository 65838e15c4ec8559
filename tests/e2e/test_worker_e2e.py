"""The whole path: loader -> DynamoDB (moto) -> bridge -> Kinesis (kinesis-local, 2 shards)
-> KCL MultiLangDaemon (Java, KCL 3.1.3) + ddbcdc shard processors -> PostgreSQL.

Each test gets a ``customers`` table and stream of its own on the session's local stack, and
a database of its own (the ``customers`` fixture).
``ddbcdc worker`` runs as a real subprocess in its own process group, as an operator runs it.

Timing notes (KCL 3.x, measured against moto and kinesis-local): a fresh application waits a
random 1-30 s before its first shard sync (KCL avoids a thundering herd on an empty lease
table), leases are handed out by the elected leader's lease assignment manager, and the
leader lock lasts two minutes, so the failover test kills the worker that is *not* leader.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cluster import Customers

from ddbcdc.aws import clients as aws
from ddbcdc.aws.errors import AwsNotFoundError
from ddbcdc.load.plan import LoadOptions, plan_operations
from ddbcdc.load.writer import run_load
from ddbcdc.local.postgres import free_port
from ddbcdc.local.stack import LocalStack
from ddbcdc.verify.compare import Comparison, compare

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CONVERGE_TIMEOUT_S = 180.0


class Worker:
    """``ddbcdc worker`` as a subprocess in its own process group."""

    def __init__(self, env: dict[str, str], log_path: Path, *args: str) -> None:
        self.log_path = log_path
        self.metrics_port = free_port()
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ddbcdc.cli",
                "--log-level",
                "INFO",
                "worker",
                "--metrics-port",
                str(self.metrics_port),
                *args,
            ],
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            start_new_session=True,
        )

    def get(self, path: str) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.metrics_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, ""

    def stop(self, timeout: float = 90.0) -> int:
        """SIGTERM (graceful: every shard checkpoints), then wait."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        """SIGKILL the whole process group: wrapper, Java daemon and shard processors."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._log.close()

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def load(customers: Customers, **options: Any) -> int:
    client = aws.client("dynamodb", customers.stack.settings(), max_attempts=1)
    opts = LoadOptions(table=customers.table, **options)
    summary = run_load(client, opts, operations=list(plan_operations(opts)))
    assert summary.errors == 0
    return summary.total_writes


def query(database_url: str, sql: str) -> list[Any]:
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        rows = list(conn.execute(sa.text(sql)).all())
    engine.dispose()
    return rows


def leases(stack: LocalStack, application: str) -> dict[str, dict[str, str | None]]:
    client = aws.client("dynamodb", stack.settings())
    try:
        items = client.scan(TableName=application, ConsistentRead=True)["Items"]
    except AwsNotFoundError:
        return {}
    return {
        item["leaseKey"]["S"]: {
            "owner": item.get("leaseOwner", {}).get("S"),
            "checkpoint": item.get("checkpoint", {}).get("S"),
        }
        for item in items
    }


def leader(stack: LocalStack, application: str) -> str | None:
    client = aws.client("dynamodb", stack.settings())
    try:
        items = client.scan(TableName=f"{application}-CoordinatorState")["Items"]
    except AwsNotFoundError:
        return None
    owners = [i["ownerName"]["S"] for i in items if i["key"]["S"] == "Leader" and "ownerName" in i]
    return owners[0] if owners else None


def wait_for(
    what: str, check: Callable[[], bool], timeout: float, *workers: Worker, every: float = 1.0
) -> float:
    """Poll ``check`` until true; fail with the workers' log tails after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        for worker in workers:
            if worker.proc.poll() is not None and worker.proc.returncode != -signal.SIGKILL:
                pytest.fail(f"worker exited ({worker.proc.returncode}):\n{worker.log_tail()}")
        time.sleep(every)
    logs = "\n\n".join(w.log_tail() for w in workers)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{logs}")


def assert_converged(customers: Customers, *workers: Worker) -> None:
    database_url = customers.database
    dynamodb = aws.client("dynamodb", customers.stack.settings())
    engine = sa.create_engine(database_url)
    last: list[Comparison] = []

    def same() -> bool:
        last[:] = [compare(dynamodb, engine, customers.mapping)]
        return last[0].matches

    try:
        wait_for("PostgreSQL to equal the DynamoDB table", same, CONVERGE_TIMEOUT_S, *workers)
    finally:
        engine.dispose()
    assert last[0].source_items > 50  # the load left a real table behind, not an empty one
    assert query(database_url, "SELECT count(*) FROM ddbcdc_dead_letters")[0][0] == 0


def assert_checkpoints_match_progress(
    customers: Customers, application: str, *workers: Worker
) -> None:
    """Every shard: progress row present, checkpoint advanced to the last applied record."""
    stack, database_url = customers.stack, customers.database

    def matched() -> bool:
        progress = {
            r.shard_id: r.sequence_number
            for r in query(
                database_url,
                "SELECT shard_id, sequence_number FROM ddbcdc_shard_progress "
                f"WHERE application = '{application}'",
            )
        }
        checkpoints = {k: v["checkpoint"] for k, v in leases(stack, application).items()}
        return len(checkpoints) == 2 and progress == checkpoints

    wait_for("checkpoints to reach the shard progress rows", matched, 60, *workers)
    for lease in leases(stack, application).values():
        assert lease["checkpoint"] not in (None, "TRIM_HORIZON", "LATEST")


def test_worker_applies_every_change_and_checkpoints_every_shard(
    customers: Customers, tmp_path: Path
) -> None:
    stack = customers.stack
    application = f"e2e-{uuid.uuid4().hex[:6]}"
    env = customers.worker_env(DDBCDC_APPLICATION_NAME=application)
    worker = Worker(env, tmp_path / "worker.log")
    try:
        writes = load(customers, count=1200, keys=300, seed=4, workers=4)
        assert_converged(customers, worker)
        assert_checkpoints_match_progress(customers, application, worker)

        status, body = worker.get("/metrics")
        assert status == 200
        applied = sum(
            float(line.rsplit(" ", 1)[1])
            for line in body.splitlines()
            if line.startswith("ddbcdc_worker_records_total{")
        )
        assert applied >= writes
        assert worker.get("/healthz")[0] == 200

        result = subprocess.run(
            [sys.executable, "-m", "ddbcdc.cli", "status", "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        shards = json.loads(result.stdout)["shards"]
        assert sorted(s["shard_id"] for s in shards) == sorted(leases(stack, application))
        assert sum(s["records_total"] for s in shards) >= writes
    finally:
        code = worker.stop()
    assert code == 0, worker.log_tail()
    log = worker.log_path.read_text(errors="replace")
    assert "shutdown requested shard=" in log
    assert "Traceback" not in log


def applied_by_shard(worker: Worker) -> dict[str, float]:
    """Records the worker's shard processors applied, per shard (from its /metrics)."""
    status, body = worker.get("/metrics")
    counts: dict[str, float] = {}
    if status != 200:
        return counts
    for line in body.splitlines():
        if line.startswith('ddbcdc_worker_records_total{shard="'):
            shard = line.split('"', 2)[1]
            counts[shard] = counts.get(shard, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def both_working(stack: LocalStack, application: str, workers: dict[str, Worker]) -> bool:
    """Each worker owns a lease now and has applied records of a shard it owns."""
    owned: dict[str, set[str]] = {wid: set() for wid in workers}
    for shard, lease in leases(stack, application).items():
        if lease["owner"] in owned:
            owned[lease["owner"]].add(shard)
    return all(
        any(applied_by_shard(workers[wid]).get(shard, 0) > 0 for shard in shards)
        for wid, shards in owned.items()
    )


def test_two_workers_share_shards_and_survive_one_being_killed(
    customers: Customers, tmp_path: Path
) -> None:
    stack = customers.stack
    application = f"e2e-{uuid.uuid4().hex[:6]}"
    env = customers.worker_env(DDBCDC_APPLICATION_NAME=application)
    workers = {
        wid: Worker(env, tmp_path / f"{wid}.log", "--worker-id", wid)
        for wid in ("worker-a", "worker-b")
    }
    # Phase 1 starts the shards; phase 2 runs until after one worker is killed.
    loading = threading.Thread(
        target=load,
        args=(customers,),
        kwargs={"count": 3000, "keys": 300, "seed": 9, "rate": 100},
    )
    try:
        load(customers, count=400, keys=300, seed=8, workers=4)
        wait_for(
            "both workers to hold a lease",
            lambda: {v["owner"] for v in leases(stack, application).values()} == set(workers),
            120,
            *workers.values(),
        )
        loading.start()
        wait_for(
            "both workers to apply records of a shard they own",
            lambda: both_working(stack, application, workers),
            25,
            *workers.values(),
        )
        boss = leader(stack, application)
        assert boss in workers, f"no leader recorded: {boss!r}"
        victim_id = next(w for w in workers if w != boss)
        victim, survivor = workers[victim_id], workers[boss]
        assert loading.is_alive(), "the load ended before the kill: make it longer"
        victim.kill()

        took = wait_for(
            "the surviving worker to take every lease over",
            lambda: {v["owner"] for v in leases(stack, application).values()} == {boss},
            60,
            survivor,
        )
        assert took < 45
        loading.join(timeout=120)
        assert not loading.is_alive()
        assert_converged(customers, survivor)
        assert_checkpoints_match_progress(customers, application, survivor)
        assert "shard processor started" in victim.log_path.read_text(errors="replace")
    finally:
        for worker in workers.values():
            if worker.proc.poll() is None:
                worker.stop()
        loading.join(timeout=120)
