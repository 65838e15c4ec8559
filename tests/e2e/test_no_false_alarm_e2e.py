"""Nothing wrong, no alarm: ``/healthz`` and ``ddbcdc status`` (exit 3) stay quiet through a
worker's start, a batch held for longer than the stall threshold by a lock another session
holds (busy, not stalled), an idle stream, and a restart with the same ``--worker-id``.

The threshold is small (:data:`STALL_AFTER_S`) so each situation lasts two thresholds;
``/healthz`` and ``status`` are asked every second throughout, and every answer is kept.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from cluster import ROOT, Customers, SteadyLoad, Worker, shard_sequences, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STALL_AFTER_S = 12


class Watch(threading.Thread):
    """Asks ``/healthz`` and ``ddbcdc status`` every second; keeps every alarm raised."""

    def __init__(self, worker: Worker, env: dict[str, str], application: str) -> None:
        super().__init__(daemon=True)
        self.worker, self.env, self.application = worker, env, application
        self.alarms: list[str] = []
        self.phase = "start"
        self.states: set[str] = set()
        #: Set while ``status`` must not alarm: not from a worker's stop until the restarted
        #: one has read both shards again (nothing reads them meanwhile).
        self.quiet = threading.Event()
        self.quiet.set()
        self._done = threading.Event()

    def status(self) -> tuple[int, list[dict[str, object]]]:
        command = [sys.executable, "-m", "ddbcdc.cli", "status", "--json"]
        command += ["--application-name", self.application, "--stall-after", str(STALL_AFTER_S)]
        done = subprocess.run(
            command, env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        return done.returncode, json.loads(done.stdout)["shards"] if done.stdout else []

    def run(self) -> None:
        while not self._done.wait(1.0):
            code, body = self.worker.get("/healthz")
            if code not in (200, 0):  # 0: the worker is between runs
                self.alarms.append(f"{self.phase}: /healthz {code}: {body.strip()}")
            if not self.quiet.is_set():
                continue
            code, shards = self.status()
            self.states |= {str(s["state"]) for s in shards}
            if code == 3 and self.quiet.is_set():
                found = [(s["shard_id"], s["state"], s["seconds_since_update"]) for s in shards]
                self.alarms.append(f"{self.phase} {time.strftime('%H:%M:%S')}: status 3 {found}")

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=90)


def test_a_start_a_lock_wait_an_idle_stream_and_a_restart_raise_no_alarm(
    customers: Customers, tmp_path: Path
) -> None:
    database = customers.database
    application = f"quiet-{uuid.uuid4().hex[:6]}"
    env = customers.worker_env(
        DDBCDC_APPLICATION_NAME=application, DDBCDC_STALL_AFTER_S=str(STALL_AFTER_S)
    )
    load = SteadyLoad(customers.stack, rate=10, keys=50, seed=5, table=customers.table)
    worker = Worker(env, tmp_path / "worker.log", "--worker-id", "quiet")
    watch = Watch(worker, env, application)
    engine = sa.create_engine(database)

    def read_since(moment: float) -> bool:
        """Whether both shards' progress rows were updated after ``moment``."""
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT count(*) FROM ddbcdc_shard_progress WHERE application = :a "
                    "AND updated_at > to_timestamp(:t)"
                ),
                {"a": application, "t": moment},
            ).scalar()
        return rows == 2

    try:
        watch.start()  # from the worker's start on
        load.start()
        wait_for(
            "the worker to apply records of both shards",
            lambda: len(shard_sequences(database, application)) == 2,
            150,
            worker,
        )
        # Another session holds a lock every batch needs for two thresholds.
        watch.phase = "lock"
        with engine.connect() as conn, conn.begin():
            conn.execute(sa.text("LOCK TABLE customers IN SHARE MODE"))
            time.sleep(2 * STALL_AFTER_S)
        assert "busy" in watch.states, watch.states
        watch.phase = "after the lock"
        load.finish()
        watch.phase = "idle"
        time.sleep(2 * STALL_AFTER_S)  # an idle stream
        watch.quiet.clear()
        watch.phase = "restart"
        assert worker.stop() == 0, worker.log_tail()
        worker.restart()  # /healthz is watched from its start on
        restarted = time.time()
        wait_for("both shards to be read again", lambda: read_since(restarted), 120, worker)
        watch.quiet.set()
        time.sleep(2 * STALL_AFTER_S)
        assert watch.alarms == [], "\n".join(watch.alarms[:20])
    finally:
        watch.stop()
        engine.dispose()
        if load.is_alive():
            load.finish()
        worker.stop()
