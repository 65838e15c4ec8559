"""Chaos under load: workers and shard processors killed, PostgreSQL crashed, nothing lost.

Two ``ddbcdc worker``s (``--worker-id a`` and ``b``, one application) consume a 2-shard
stream while the loader inserts, modifies and removes at a steady rate over a few hundred
keys. At seeded random moments:

* a worker's whole process tree is SIGKILLed and started again 2-5 s later with its id;
* the worker that is not the KCL leader is SIGKILLed and kept down until the other has taken
  over its shards (the failover time is measured and printed);
* a single shard processor is SIGKILLed (the daemon then stops its worker, and the test's
  supervisor starts it again, as systemd's ``Restart=always`` would);
* PostgreSQL (a cluster of this test's own) is stopped with ``pg_ctl -m immediate`` for 10 s.

Then PostgreSQL must equal a Scan of the table exactly, and the change log must hold every
change the loader made, once, in the order it made them.

Both sources: Kinesis (kinesis-local fed by the bridge; what CI runs) and DynamoDB Streams
(the local front, whose shards also roll over once during the faults, and whose timestamps
are whole seconds). ``DDBCDC_CHAOS_SOURCES=kinesis,dynamodb-streams`` runs both.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa
from cluster import (
    MAPPINGS_DIR,
    SteadyLoad,
    Worker,
    assert_exact,
    leader,
    leases,
    provision,
    shard_sequences,
    wait_for,
    worker_env,
)

from ddbcdc.local.postgres import TemporaryPostgres
from ddbcdc.local.stack import LocalStack
from ddbcdc.migrate.run import upgrade
from ddbcdc.schema.mapping import load_mappings

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STREAM = "ddbcdc-chaos"
SEED = int(os.environ.get("DDBCDC_CHAOS_SEED", "20261201"))
FAILOVER_MS = 3000
LOAD_RATE = 40  # writes/s: what moto's stream and the bridge keep up with on a busy machine
KEYS = 300
# Failover time plus lease assignment, discovery and a processor start, and a slow machine.
FAILOVER_BOUND_S = FAILOVER_MS / 1000 + 20
EVENTS = ("kill_worker", "kill_worker", "failover", "kill_processor", "crash_postgres")
SOURCES = os.environ.get("DDBCDC_CHAOS_SOURCES", "kinesis").split(",")


@pytest.fixture
def own_postgres() -> Iterator[TemporaryPostgres]:
    """A PostgreSQL for this test alone: it is crashed on purpose.

    Durable (fsync and synchronous commit on), as a production server is: the other tests'
    cluster acknowledges commits before they reach the disk, and a crash loses them.
    """
    with TemporaryPostgres(durable=True) as pg:
        engine = sa.create_engine(pg.url)
        upgrade(engine, load_mappings(MAPPINGS_DIR))
        engine.dispose()
        yield pg


@pytest.fixture(params=SOURCES)
def chaos_stack(
    own_postgres: TemporaryPostgres, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[LocalStack]:
    with LocalStack(database_url=own_postgres.url, source=request.param) as running:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
            monkeypatch.setenv(name, running.env[name])
        yield running


@dataclass
class Supervisor:
    """Starts a worker again 2 s after it exits, as ``Restart=always, RestartSec=2`` does."""

    workers: dict[str, Worker]
    restart_after_s: float = 2.0
    exits: list[tuple[str, int]] = field(default_factory=list)
    held: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        exited_at: dict[str, float] = {}
        while not self._stop.is_set():
            with self._lock:
                for wid, worker in self.workers.items():
                    if wid in self.held or worker.alive():
                        exited_at.pop(wid, None)
                        continue
                    if wid not in exited_at:
                        exited_at[wid] = time.monotonic()
                        self.exits.append((wid, worker.proc.returncode))
                    elif time.monotonic() - exited_at[wid] >= self.restart_after_s:
                        worker.restart()
                        exited_at.pop(wid)
            self._stop.wait(0.2)

    def kill(self, wid: str) -> None:
        """SIGKILL the worker's process tree and keep it down until :meth:`release`."""
        with self._lock:
            self.held.add(wid)
        self.workers[wid].kill()

    def release(self, wid: str) -> None:
        """Start it again now."""
        with self._lock:
            self.held.discard(wid)
            self.workers[wid].restart()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def open_shards(stack: LocalStack, application: str) -> set[str]:
    """The shards with a lease that have not ended (the ones a crash must not stop)."""
    return {s for s, row in leases(stack, application).items() if row.checkpoint != "SHARD_END"}


def owned_by(stack: LocalStack, application: str, wid: str) -> set[str]:
    """The shards ``wid`` holds that have not ended."""
    rows = leases(stack, application).items()
    return {s for s, row in rows if row.owner == wid and row.checkpoint != "SHARD_END"}


def time_until_read_again(
    database: str, application: str, shards: set[str], since: float, timeout: float
) -> float:
    """Seconds from ``since`` (monotonic) until every shard of ``shards`` applied more."""
    before = shard_sequences(database, application)

    def advanced() -> bool:
        now = shard_sequences(database, application)
        return all(now.get(s, -1) > before.get(s, -1) for s in shards)

    wait_for(f"shards {sorted(shards)} to be read again", advanced, timeout, every=0.25)
    return time.monotonic() - since


class Chaos:
    """The fault events, in the order a seeded random generator chose, with what they cost."""

    def __init__(
        self,
        stack: LocalStack,
        pg: TemporaryPostgres,
        database: str,
        application: str,
        supervisor: Supervisor,
        rng: random.Random,
    ) -> None:
        self.stack, self.pg, self.database = stack, pg, database
        self.application, self.supervisor, self.rng = application, supervisor, rng
        self.report: list[str] = []
        self.failovers: list[float] = []
        self.processor_killed_in: list[str] = []

    def run(self, event: str) -> None:
        action: Callable[[], str] = getattr(self, event)
        started = time.monotonic()
        line = action()
        self.report.append(f"t+{started - self.t0:5.1f}s {event}: {line}")
        print(self.report[-1], flush=True)

    def start(self) -> None:
        self.t0 = time.monotonic()

    def kill_worker(self) -> str:
        wid = self.rng.choice(sorted(self.supervisor.workers))
        shards = owned_by(self.stack, self.application, wid)
        killed = time.monotonic()
        self.supervisor.kill(wid)
        delay = self.rng.uniform(2, 5)
        time.sleep(delay)
        self.supervisor.release(wid)
        took = time_until_read_again(
            self.database, self.application, shards, killed, FAILOVER_BOUND_S + delay + 30
        )
        return f"{wid} down {delay:.1f}s, its shards {sorted(shards)} read again after {took:.1f}s"

    def failover(self) -> str:
        boss = leader(self.stack, self.application)
        wid = next(w for w in sorted(self.supervisor.workers) if w != boss)
        # After an earlier kill the leader may not have given it a lease back yet.
        wait_for(
            f"{wid} to hold a lease",
            lambda: bool(owned_by(self.stack, self.application, wid)),
            120,
            every=0.5,
        )
        shards = owned_by(self.stack, self.application, wid)
        killed = time.monotonic()
        self.supervisor.kill(wid)
        took = time_until_read_again(
            self.database, self.application, shards, killed, FAILOVER_BOUND_S + 60
        )
        self.failovers.append(took)
        self.supervisor.release(wid)
        return f"{wid} (not leader {boss}) down; {sorted(shards)} taken over in {took:.1f}s"

    def kill_processor(self) -> str:
        running: dict[str, list[int]] = {}

        def some_running() -> bool:
            found = {w: x.processor_pids() for w, x in self.supervisor.workers.items()}
            running.update({w: pids for w, pids in found.items() if pids})
            return bool(running)

        wait_for("a shard processor to run", some_running, 60, every=0.5)
        wid = self.rng.choice(sorted(running))
        pid = self.rng.choice(running[wid])
        shards = owned_by(self.stack, self.application, wid)
        seen = len(self.supervisor.exits)
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        self.processor_killed_in.append(wid)
        wait_for(
            f"worker {wid} to stop",
            lambda: (wid, 1) in self.supervisor.exits[seen:],
            60,
            every=0.25,
        )
        stopped = time.monotonic() - killed
        took = time_until_read_again(
            self.database, self.application, shards, killed, FAILOVER_BOUND_S + 60
        )
        return (
            f"{wid}'s processor pid {pid} killed; the worker exited 1 after {stopped:.1f}s, "
            f"{sorted(shards)} read again after {took:.1f}s"
        )

    def crash_postgres(self) -> str:
        shards = open_shards(self.stack, self.application)
        self.pg.crash()
        time.sleep(10)
        self.pg.restart()
        back = time.monotonic()
        took = time_until_read_again(self.database, self.application, shards, back, 120)
        return f"down 10s; every shard applying again {took:.1f}s after the restart"

    def rollover(self) -> str:
        """DynamoDB Streams: the front closes every shard and opens their children."""
        children = set(self.stack.rollover())
        rolled = time.monotonic()
        took = time_until_read_again(self.database, self.application, children, rolled, 180)
        return f"shards rolled over; children {sorted(children)} applying after {took:.1f}s"


def notable(worker: Worker, lines: int = 80) -> str:
    """The warnings, errors and lease events of a worker's log, last ones first cut."""
    keep = ("level=WARN", "level=ERROR", "worker st", "lease", "processor started", "exited")
    text = worker.log_path.read_text(errors="replace").splitlines()
    return "\n".join([line[:300] for line in text if any(k in line for k in keep)][-lines:])


def test_faults_under_load_lose_nothing(
    chaos_stack: LocalStack, own_postgres: TemporaryPostgres, tmp_path: Path
) -> None:
    stack, database = chaos_stack, own_postgres.url
    rng = random.Random(SEED)
    print(f"\nchaos seed {SEED}")
    provision(stack, STREAM)
    application = f"chaos-{uuid.uuid4().hex[:6]}"
    env = worker_env(
        stack,
        database,
        STREAM if stack.source == "kinesis" else None,
        DDBCDC_APPLICATION_NAME=application,
        DDBCDC_FAILOVER_TIME_MS=str(FAILOVER_MS),
        DDBCDC_STALL_AFTER_S="30",
        TMPDIR=str(tmp_path / "tmp"),  # where the workers keep their folders
    )
    (tmp_path / "tmp").mkdir()
    workers = {wid: Worker(env, tmp_path / f"{wid}.log", "--worker-id", wid) for wid in "ab"}
    supervisor = Supervisor(workers)
    load = SteadyLoad(stack, rate=LOAD_RATE, keys=KEYS, seed=rng.randrange(1 << 30))
    chaos = Chaos(stack, own_postgres, database, application, supervisor, rng)
    try:
        load.start()
        wait_for(
            "both workers to apply records of a shard each",
            lambda: (
                len(shard_sequences(database, application)) == 2
                and {r.owner for r in leases(stack, application).values()} == {"a", "b"}
            ),
            180,
        )
        chaos.start()
        events = (*EVENTS, "rollover") if stack.source == "dynamodb-streams" else EVENTS
        for event in rng.sample(events, len(events)):
            time.sleep(rng.uniform(3, 8))
            chaos.run(event)
        operations = load.finish()
        assert_exact(stack, database, workers, operations)
        wait_for(
            "both workers to answer /healthz ok",
            lambda: all(w.get("/healthz") == (200, "ok\n") for w in workers.values()),
            60,
        )
        supervisor.stop()
        # Every SIGKILLed run left its folder; each start removed those of dead runs.
        assert len(list((tmp_path / "tmp").glob("ddbcdc-worker-*"))) == len(workers)
    except BaseException:
        print("\n".join(["chaos report:", *chaos.report]))
        for wid, worker in workers.items():
            print(f"--- worker {wid} (warnings and lease changes)\n{notable(worker)}")
        raise
    finally:
        supervisor.stop()
        if load.is_alive():
            load.finish()
        for worker in workers.values():
            if worker.alive():
                worker.stop()
    print("\n".join(["chaos report:", *chaos.report]))
    print(f"failover (worker down, other takes over): {[f'{t:.1f}s' for t in chaos.failovers]}")
    print(f"worker exits seen by the supervisor: {supervisor.exits}")
    assert all(t < FAILOVER_BOUND_S for t in chaos.failovers), chaos.failovers
    # A dead shard processor costs its whole worker: the daemon exits 1, the supervisor
    # starts it again.
    for wid in chaos.processor_killed_in:
        assert (wid, 1) in supervisor.exits, supervisor.exits
