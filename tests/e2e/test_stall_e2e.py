"""A stalled shard is reported, not shown healthy: /healthz, the gauge and ``ddbcdc status``.

One worker holds both shards; one of its shard processors is frozen with SIGSTOP, so the KCL
keeps renewing the lease but nothing reads the shard (the daemon waits for the processor).
Past the stall threshold the worker must say so everywhere; after SIGCONT, it recovers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from cluster import ROOT, Customers, SteadyLoad, Worker, leases, query, shard_sequences, wait_for

from ddbcdc.materialize.shard_states import session_name

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STALL_AFTER_S = 8


def processor_shard(pid: int, log: str) -> str:
    """The shard a processor process serves, from its start-up log line."""
    for line in log.splitlines():
        if f"pid={pid} " in line and "shard processor started shard=" in line:
            return line.split("shard processor started shard=", 1)[1].split()[0]
    raise AssertionError(f"no start line for processor {pid}")


def status(env: dict[str, str], application: str) -> tuple[int, list[dict[str, object]]]:
    result = subprocess.run(
        [
            *(sys.executable, "-m", "ddbcdc.cli", "status", "--json"),
            *("--application-name", application, "--stall-after", str(STALL_AFTER_S)),
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.returncode, json.loads(result.stdout)["shards"]


def gauge(worker: Worker, shard: str) -> float | None:
    _, body = worker.get("/metrics")
    prefix = f'ddbcdc_worker_shard_stalled{{shard="{shard}"}} '
    values = [float(line[len(prefix) :]) for line in body.splitlines() if line.startswith(prefix)]
    return values[0] if values else None


def test_a_frozen_processor_makes_its_shard_stalled_everywhere_until_it_resumes(
    customers: Customers, tmp_path: Path
) -> None:
    stack, database = customers.stack, customers.database
    application = f"stall-{uuid.uuid4().hex[:6]}"
    env = customers.worker_env(
        DDBCDC_APPLICATION_NAME=application, DDBCDC_STALL_AFTER_S=str(STALL_AFTER_S)
    )
    load = SteadyLoad(stack, rate=20, keys=100, seed=3, table=customers.table)
    worker = Worker(env, tmp_path / "worker.log", "--worker-id", "solo")
    frozen: int | None = None
    try:
        load.start()
        wait_for(
            "the worker to apply records of both shards",
            lambda: (
                len(shard_sequences(database, application)) == 2
                and len(worker.processor_pids()) == 2
            ),
            150,
            worker,
        )
        wait_for("/healthz to be ok", lambda: worker.get("/healthz") == (200, "ok\n"), 30, worker)
        # Each processor's sessions carry its shard's name (``ddbcdc status`` tells a long
        # batch from a stall by them).
        named = {session_name(application, s) for s in shard_sequences(database, application)}
        sessions = "SELECT DISTINCT application_name AS name FROM pg_stat_activity"
        assert named <= {r.name for r in query(database, sessions)}
        frozen = worker.processor_pids()[0]
        shard = processor_shard(frozen, worker.log_path.read_text(errors="replace"))
        assert leases(stack, application)[shard].owner == "solo"
        os.kill(frozen, signal.SIGSTOP)

        wait_for("/healthz to fail", lambda: worker.get("/healthz")[0] == 503, 60, worker)
        code, body = worker.get("/healthz")
        assert f"shard={shard} state=stalled" in body, body
        assert gauge(worker, shard) == 1.0
        assert leases(stack, application)[shard].owner == "solo"  # still renewed
        code, shards = status(env, application)
        assert code == 3
        assert {s["shard_id"]: s["stalled"] for s in shards}[shard] is True
        assert sum(bool(s["stalled"]) for s in shards) == 1

        os.kill(frozen, signal.SIGCONT)
        frozen = None
        wait_for("/healthz to be ok again", lambda: worker.get("/healthz")[0] == 200, 60, worker)
        assert gauge(worker, shard) == 0.0
        wait_for("ddbcdc status to be ok", lambda: status(env, application)[0] == 0, 60, worker)
        load.finish()
    finally:
        if frozen is not None:
            os.kill(frozen, signal.SIGCONT)
        if load.is_alive():
            load.finish()
        assert worker.stop() == 0, worker.log_tail()
