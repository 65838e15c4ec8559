"""Helpers of the end-to-end tests: ``ddbcdc worker`` processes, the KCL lease table, waits.

A :class:`Worker` is ``ddbcdc worker`` as an operator runs it: a real subprocess in its own
process group (the wrapper, the Java daemon and its shard processors), started again with the
same arguments by :meth:`Worker.restart` the way a supervisor would. :class:`Customers` is a
``customers`` table and stream of one test's own on a stack that tests share.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from ddbcdc.aws import clients as aws
from ddbcdc.aws.errors import AwsNotFoundError
from ddbcdc.aws.provision import ProvisionOptions, set_up, tear_down
from ddbcdc.load.plan import LoadOptions, Operation, expected_state, plan_operations
from ddbcdc.load.writer import run_load
from ddbcdc.local.postgres import free_port
from ddbcdc.local.stack import LocalStack
from ddbcdc.schema.mapping import TableMapping, load_mappings
from ddbcdc.verify.compare import Comparison, compare
from ddbcdc.worker.daemon import PROCESSOR_MODULE

ROOT = Path(__file__).resolve().parents[2]
MAPPINGS_DIR = ROOT / "schemas" / "tables"


class Worker:
    """``ddbcdc worker`` as a subprocess in its own process group.

    Args:
        env: the worker's environment.
        log_path: stderr of every start goes here (appended).
        args: extra command-line arguments (``--worker-id a``).
    """

    def __init__(self, env: dict[str, str], log_path: Path, *args: str) -> None:
        self.env = env
        self.log_path = log_path
        self.args = args
        self.metrics_port = free_port()
        self.starts = 0
        self.proc = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.starts += 1
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "ddbcdc.cli",
                    "--log-level",
                    "INFO",
                    "worker",
                    "--metrics-port",
                    str(self.metrics_port),
                    *self.args,
                ],
                env=self.env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )

    def alive(self) -> bool:
        """Whether the wrapper process is running."""
        return self.proc.poll() is None

    def restart(self) -> None:
        """Start it again with the same arguments (the previous process must have ended)."""
        assert not self.alive(), "restart() after the worker has stopped"
        self.proc = self._spawn()

    def get(self, path: str) -> tuple[int, str]:
        """GET ``path`` from the worker's metrics port: (status, body); (0, "") if down."""
        url = f"http://127.0.0.1:{self.metrics_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")
        except OSError:
            return 0, ""

    def stop(self, timeout: float = 90.0) -> int:
        """SIGTERM (graceful: every shard checkpoints), then wait."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL the whole process group: wrapper, Java daemon and shard processors."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while group_members(self.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)

    def processor_pids(self) -> list[int]:
        """PIDs of this worker's shard processors (:data:`PROCESSOR_MODULE` in its group)."""
        module = PROCESSOR_MODULE.encode()
        return [pid for pid in group_members(self.proc.pid) if module in _cmdline(pid)]

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def group_members(pgid: int) -> list[int]:
    """PIDs of the live (non-zombie) processes in process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def worker_env(
    stack: LocalStack, database_url: str, stream: str | None, **extra: str
) -> dict[str, str]:
    """A worker's environment on ``stack`` with short, test-sized timings.

    ``stream``: the Kinesis stream; None on a DynamoDB Streams stack (the worker reads the
    ``customers`` table's own stream).
    """
    settings = {
        "DATABASE_URL": database_url,
        **({"DDBCDC_STREAM_NAME": stream} if stream else {}),
        "DDBCDC_MAPPINGS_DIR": str(MAPPINGS_DIR),
        "DDBCDC_FAILOVER_TIME_MS": "3000",
        "DDBCDC_SHUTDOWN_GRACE_MS": "10000",
        "DDBCDC_IDLE_TIME_BETWEEN_READS_MS": "200",
        **extra,
    }
    return stack.worker_env(os.environ, **settings)


@dataclass(frozen=True)
class LeaseRow:
    """One row of the KCL lease table."""

    shard: str
    owner: str | None
    checkpoint_owner: str | None
    checkpoint: str | None
    counter: int


def leases(stack: LocalStack, application: str) -> dict[str, LeaseRow]:
    """The application's lease table, by shard id ({} while it does not exist)."""
    client = aws.client("dynamodb", stack.settings())
    try:
        items = client.scan(TableName=application, ConsistentRead=True)["Items"]
    except AwsNotFoundError:
        return {}
    rows = {}
    for item in items:
        key = item["leaseKey"]["S"]
        rows[key] = LeaseRow(
            shard=key,
            owner=item.get("leaseOwner", {}).get("S"),
            checkpoint_owner=item.get("checkpointOwner", {}).get("S"),
            checkpoint=item.get("checkpoint", {}).get("S"),
            counter=int(item.get("leaseCounter", {}).get("N", "0")),
        )
    return rows


def leader(stack: LocalStack, application: str) -> str | None:
    """The worker id holding the KCL leader lock, if any."""
    client = aws.client("dynamodb", stack.settings())
    try:
        items = client.scan(TableName=f"{application}-CoordinatorState")["Items"]
    except AwsNotFoundError:
        return None
    owners = [i["ownerName"]["S"] for i in items if i["key"]["S"] == "Leader" and "ownerName" in i]
    return owners[0] if owners else None


def query(database_url: str, sql: str, **params: Any) -> list[Any]:
    """Rows of one SQL statement (bound parameters only)."""
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(sql), params).all())
    finally:
        engine.dispose()


def shard_sequences(database_url: str, application: str) -> dict[str, int]:
    """The last applied sequence number of every shard that has applied a record, from
    ``ddbcdc_shard_progress`` (shards listed but not started have none)."""
    try:
        rows = query(
            database_url,
            "SELECT shard_id, sequence_number FROM ddbcdc_shard_progress "
            "WHERE application = :a AND sequence_number IS NOT NULL",
            a=application,
        )
    except sa.exc.OperationalError:
        return {}
    return {r.shard_id: int(r.sequence_number) for r in rows}


def wait_for(
    what: str,
    check: Callable[[], bool],
    timeout: float,
    *workers: Worker,
    every: float = 1.0,
) -> float:
    """Poll ``check`` until true; fail with the workers' log tails after ``timeout``.

    A worker that exits on its own (not killed by the test) fails the wait at once.
    """
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        for worker in workers:
            code = worker.proc.poll()
            if code is not None and code != -signal.SIGKILL:
                pytest.fail(f"worker exited ({code}):\n{worker.log_tail()}")
        time.sleep(every)
    logs = "\n\n".join(w.log_tail() for w in workers)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{logs}")


def provision(stack: LocalStack, stream: str, *, shards: int = 2) -> None:
    """The ``customers`` table and a ``shards``-shard stream on ``stack`` (on a DynamoDB
    Streams stack: the table's own stream; the front decides its shards)."""
    settings = stack.settings()
    set_up(
        aws.client("dynamodb", settings),
        aws.client("kinesis", settings),
        ProvisionOptions(
            table="customers",
            stream=stream,
            shards=shards,
            local=True,
            timeout=60,
            source=stack.source,
        ),
    )


@dataclass(frozen=True)
class Customers:
    """A ``customers`` table and its stream, of one test's own, on a stack tests share.

    The DynamoDB table and the Kinesis stream have fresh names; the mapping in
    ``mappings_dir`` is schemas/tables/customers.json reading that table, so PostgreSQL's
    tables are ``customers`` and ``ddbcdc_changes__customers`` as ever.
    """

    stack: LocalStack
    table: str
    stream: str
    mappings_dir: Path
    mapping: TableMapping
    database: str = ""  # the URL of the test's database, once it has one

    def worker_env(self, **extra: str) -> dict[str, str]:
        """A worker's environment for this table (see :func:`worker_env`)."""
        mappings = {"DDBCDC_MAPPINGS_DIR": str(self.mappings_dir)}
        return worker_env(self.stack, self.database, self.stream, **{**mappings, **extra})


@contextlib.contextmanager
def customers_table(stack: LocalStack, folder: Path, *, shards: int = 2) -> Iterator[Customers]:
    """A :class:`Customers` table and ``shards``-shard stream on ``stack``, its mapping written
    to ``folder``; both removed on exit."""
    name = f"customers_{uuid.uuid4().hex[:8]}"
    document = json.loads((MAPPINGS_DIR / "customers.json").read_text())
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "customers.json").write_text(json.dumps({**document, "source_table": name}))
    (mapping,) = load_mappings(folder)
    settings = stack.settings()
    dynamodb, kinesis = aws.client("dynamodb", settings), aws.client("kinesis", settings)
    options = ProvisionOptions(
        table=name, stream=f"{name}-stream", shards=shards, local=True, timeout=60
    )
    set_up(dynamodb, kinesis, options)
    try:
        yield Customers(stack, name, options.stream, folder, mapping)
    finally:
        tear_down(dynamodb, kinesis, options)


class SteadyLoad(threading.Thread):
    """Inserts, modifies and removes at a steady rate until :meth:`finish`; keeps every write.

    The load runs in chunks of ``chunk_s`` seconds, each planned from the table state the
    previous ones left, so :attr:`operations` is the whole history the loader wrote, in order.
    """

    def __init__(
        self,
        stack: LocalStack,
        *,
        rate: float,
        keys: int,
        seed: int,
        chunk_s: float = 2.0,
        table: str = "customers",
    ) -> None:
        super().__init__(name="steady-load", daemon=True)
        self.client = aws.client("dynamodb", stack.settings(), max_attempts=1)
        self.table = table
        self.rate = rate
        self.keys = keys
        self.seed = seed
        self.chunk = max(1, int(rate * chunk_s))
        self.operations: list[Operation] = []
        self.errors: list[BaseException] = []
        self._state: dict[int, Any] = {}
        self._stop_event = threading.Event()

    def run(self) -> None:
        round_ = 0
        try:
            while not self._stop_event.is_set():
                options = LoadOptions(
                    table=self.table,
                    count=self.chunk,
                    keys=self.keys,
                    seed=self.seed * 100_003 + round_,
                    rate=self.rate,
                    workers=2,
                )
                ops = list(plan_operations(options, existing=self._state))
                summary = run_load(self.client, options, operations=ops)
                if summary.errors:
                    raise AssertionError(f"load errors: {summary.error_codes}")
                self.operations.extend(ops)
                self._state = expected_state(ops, initial=self._state)
                round_ += 1
        except BaseException as exc:
            self.errors.append(exc)

    def finish(self, timeout: float = 120.0) -> list[Operation]:
        """Stop after the current chunk; every operation written, in plan order."""
        self._stop_event.set()
        self.join(timeout=timeout)
        assert not self.is_alive(), "the load did not stop"
        if self.errors:
            raise self.errors[0]
        return self.operations


def changes_by_key(database: str) -> dict[int, list[str]]:
    """The change log: each key's operations in version order."""
    rows = query(
        database,
        "SELECT userid, _ddbcdc_op FROM ddbcdc_changes__customers "
        "ORDER BY userid, _ddbcdc_version_us, _ddbcdc_sequence, _ddbcdc_event_id",
    )
    found: dict[int, list[str]] = defaultdict(list)
    for row in rows:
        found[int(row.userid)].append(row._ddbcdc_op)
    return dict(found)


def written_by_key(operations: list[Operation]) -> dict[int, list[str]]:
    """What the loader wrote: each key's operations in the order it wrote them."""
    names = {"insert": "INSERT", "modify": "MODIFY", "remove": "REMOVE"}
    written: dict[int, list[str]] = defaultdict(list)
    for op in operations:
        written[op.key].append(names[op.kind])
    return dict(written)


def assert_exact(
    stack: LocalStack, database: str, workers: dict[str, Worker], operations: list[Operation]
) -> None:
    """PostgreSQL equals a Scan, and the change log holds every change, once, in order."""
    dynamodb = aws.client("dynamodb", stack.settings())
    engine = sa.create_engine(database)
    (mapping,) = load_mappings(MAPPINGS_DIR)
    last: list[Comparison] = []

    def same() -> bool:
        last[:] = [compare(dynamodb, engine, mapping)]
        return last[0].matches

    try:
        waited = wait_for(
            "PostgreSQL to equal the DynamoDB table", same, 240, *workers.values(), every=2
        )
    finally:
        engine.dispose()
    print(f"converged {waited:.0f}s after the load: {last[0]}")
    assert last[0].source_items > 50
    written = written_by_key(operations)
    logged: dict[int, list[str]] = {}

    def complete() -> bool:
        logged.clear()
        logged.update(changes_by_key(database))
        return logged == written

    try:
        wait_for("the change log to hold every change", complete, 60, every=2)
    except BaseException:
        wrong = sorted(k for k in written.keys() | logged.keys() if written.get(k) != logged.get(k))
        print(f"change log differs for {len(wrong)} keys, e.g.:")
        for key in wrong[:5]:
            print(f"  key {key}: written {written.get(key)}, logged {logged.get(key)}")
        raise
    total = query(database, "SELECT count(*) FROM ddbcdc_changes__customers")[0][0]
    assert total == len(operations)
    print(f"change log: {total} changes, every one the loader wrote, in its order")
    assert query(database, "SELECT count(*) FROM ddbcdc_dead_letters")[0][0] == 0
