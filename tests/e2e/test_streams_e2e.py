"""DynamoDB Streams end to end: loader -> DynamoDB (moto) -> the table's DynamoDB stream (the
local front: 2 shards, rollover on demand) -> StreamsDaemon (the DynamoDB Streams Kinesis
Adapter's KCL scheduler) + ddbcdc shard processors -> PostgreSQL.

No Kinesis and no bridge: ``ddbcdc setup`` enables the table's own stream and the workers
read it, found from the table. While the load runs, ``ddbcdc snapshot`` (its preconditions on
the DynamoDB stream and the workers' leases) and ``ddbcdc verify`` (which asks the DynamoDB
stream whether the workers have passed a time) run beside them; ``ddbcdc status`` and
``/metrics`` report on the stream's shards.
ApproximateCreationDateTime comes in whole seconds, as DynamoDB Streams sends it, so many
changes of one key share a second and only sequence numbers order them. The table's Time to
Live (``ddbcdc setup --ttl-attribute``) expires items on the front's sweeper, and a mapping
with ``"ttl_deletes": "keep"`` archives them, while a user's delete is a plain delete.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from cluster import (
    MAPPINGS_DIR,
    ROOT,
    SteadyLoad,
    Worker,
    assert_exact,
    leases,
    query,
    shard_sequences,
    wait_for,
    worker_env,
)

from ddbcdc.aws import clients as aws
from ddbcdc.aws.streams import Stream, open_stream
from ddbcdc.load.plan import DEFAULT_MIX, LoadOptions, Operation, expected_state, plan_operations
from ddbcdc.load.writer import run_load
from ddbcdc.local.stack import LocalStack
from ddbcdc.schema.mapping import load_mappings

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def streams_stack(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalStack]:
    """A DynamoDB Streams stack (moto, the front) on the session's PostgreSQL."""
    with LocalStack(database_url=postgres_url, source="dynamodb-streams", shards=2) as running:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
            monkeypatch.setenv(name, running.env[name])
        yield running


@pytest.fixture
def archiving(
    fresh_database: Callable[..., AbstractContextManager[str]], tmp_path: Path
) -> Iterator[tuple[str, Path]]:
    """The shipped customers mapping keeping what the TTL expires, in a folder of its own, and
    a fresh database for it: (its URL, the folder)."""
    document = json.loads((MAPPINGS_DIR / "customers.json").read_text())
    folder = tmp_path / "mappings"
    folder.mkdir()
    (folder / "customers.json").write_text(json.dumps({**document, "ttl_deletes": "keep"}))
    with fresh_database("t_e2e", mappings=load_mappings(folder)) as url:
        yield url, folder


def _env(
    stack: LocalStack, database: str, application: str, tmp_path: Path, **extra: str
) -> dict[str, str]:
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return worker_env(
        stack,
        database,
        None,
        DDBCDC_APPLICATION_NAME=application,
        DDBCDC_CACHE_DIR=str(Path.home() / ".cache" / "ddbcdc"),
        TMPDIR=str(tmp_path / "tmp"),
        **extra,
    )


def ddbcdc(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``ddbcdc ARGS`` as an operator runs it, in the workers' environment."""
    return subprocess.run(
        [sys.executable, "-m", "ddbcdc.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_two_workers_a_kill_and_a_restart_lose_nothing(
    streams_stack: LocalStack, database: str, tmp_path: Path
) -> None:
    stack = streams_stack
    application = f"ddbs-{uuid.uuid4().hex[:6]}"
    env = _env(stack, database, application, tmp_path)
    set_up = ddbcdc(env, "setup")
    assert set_up.returncode == 0, set_up.stderr
    assert "NEW_AND_OLD_IMAGES" in set_up.stdout + set_up.stderr
    workers = {w: Worker(env, tmp_path / f"{w}.log", "--worker-id", w) for w in "ab"}
    load = SteadyLoad(stack, rate=40, keys=200, seed=7)
    try:
        load.start()
        wait_for(
            "both workers to apply records of a shard each",
            lambda: (
                len(shard_sequences(database, application)) == 2
                and {r.owner for r in leases(stack, application).values()} == {"a", "b"}
            ),
            240,
            *workers.values(),
        )
        shards = {s for s, r in leases(stack, application).items() if r.owner == "a"}
        before = shard_sequences(database, application)
        workers["a"].kill()
        time.sleep(3)
        workers["a"].restart()
        wait_for(
            f"a's shards {sorted(shards)} to be read again after the kill",
            lambda: all(
                shard_sequences(database, application).get(s, -1) > before.get(s, -1)
                for s in shards
            ),
            120,
            *workers.values(),
        )
        # A backfill and a verify while the load goes on, both on the DynamoDB stream.
        snapshot = ddbcdc(env, "snapshot", "--no-progress", "--segments", "2")
        assert snapshot.returncode == 0, snapshot.stderr
        assert "refused" not in snapshot.stderr
        checked = ddbcdc(env, "verify", "--json", "--no-progress", "--settle-timeout", "120")
        assert checked.returncode == 0, (checked.stdout, checked.stderr)
        report = json.loads(checked.stdout)
        assert report["drift"] is False and report["unconfirmed"] == 0
        assert load.is_alive(), "the load ended before verify: make it longer"
        operations = load.finish()
        assert_exact(stack, database, workers, operations)
        status = ddbcdc(env, "status", "--json", "--application-name", application)
        assert status.returncode == 0, status.stdout + status.stderr
        shown = json.loads(status.stdout)
        assert {s["shard_id"] for s in shown["shards"]} == set(leases(stack, application))
        assert [t["open_shards"] for t in shown["stream_times"]] == [2]
        assert shown["backfills"][0]["status"] == "done"
        metrics = workers["b"].get("/metrics")[1]
        assert "ddbcdc_worker_lineage_disorder 0.0" in metrics
        assert "ddbcdc_worker_shard_stalled" in metrics
        # Whole seconds, as DynamoDB Streams stamps them: the log's versions prove it.
        fractions = query(
            database,
            "SELECT count(*) FROM ddbcdc_changes__customers "
            "WHERE _ddbcdc_version_us % 1000000 <> 0",
        )[0][0]
        assert fractions == 0
        assert all(w.get("/healthz") == (200, "ok\n") for w in workers.values())
    finally:
        if load.is_alive():
            load.finish()
        for worker in workers.values():
            if worker.alive():
                worker.stop()


def test_rollover_and_split_keep_every_key_in_order_and_expiries_are_archived(
    streams_stack: LocalStack, archiving: tuple[str, Path], tmp_path: Path
) -> None:
    """Generation 0 (2 shards) rolls over to 2 children mid-burst (four changes of key 1 in
    the same second on each side), which split into 4; one worker reads them all. Then items
    expire under the table's Time to Live: the worker's copy keeps them as TTL expiries."""
    stack = streams_stack
    database, mappings = archiving
    application = f"ddbs-{uuid.uuid4().hex[:6]}"
    env = _env(stack, database, application, tmp_path, DDBCDC_MAPPINGS_DIR=str(mappings))
    set_up = ddbcdc(env, "setup", "--ttl-attribute", "expires_at")
    assert set_up.returncode == 0, set_up.stderr
    worker = Worker(env, tmp_path / "w.log")
    operations: list[Operation] = []
    state: dict[int, Any] = {}

    def load(count: int, seed: int, *, keys: int = 120) -> None:
        client = aws.client("dynamodb", stack.settings(), max_attempts=1)
        burst = keys == 1  # one key, one writer, one write a request: as fast as it goes
        options = LoadOptions(
            table="customers",
            count=count,
            keys=keys,
            seed=seed,
            mix={"insert": 1, "modify": 8, "remove": 1} if burst else DEFAULT_MIX,
            workers=1 if burst else 4,
            batch_size=1 if burst else 25,
        )
        existing = {k: v for k, v in state.items() if k == 1} if burst else state
        ops = list(plan_operations(options, existing=existing))
        summary = run_load(client, options, operations=ops)
        assert not summary.errors, summary.error_codes
        operations.extend(ops)
        after = expected_state(ops, initial=existing)
        for key in existing.keys() | {op.key for op in ops}:
            state.pop(key, None)
        state.update(after)

    try:
        load(400, seed=1)
        load(4, seed=2, keys=1)
        children = stack.rollover()  # in the burst's second: it goes on in the children
        load(4, seed=3, keys=1)
        load(300, seed=4)
        grandchildren = stack.rollover(split=True)
        load(300, seed=5)
        assert len(children) == 2 and len(grandchildren) == 4
        wait_for(
            "a progress row for every shard of the later generations",
            lambda: (
                {r.shard_id for r in _progress(database, application)}
                >= set(children) | set(grandchildren)
            ),
            300,
            worker,
        )
        assert_exact(stack, database, {"w": worker}, operations)
        closed = {s.shard_id for s in _stream(stack).shards() if not s.open}
        assert set(children) <= closed and len(closed) == 4
        wait_for(
            "every closed shard to be marked ended",
            lambda: (
                closed
                <= {r.shard_id for r in _progress(database, application) if r.ended_at is not None}
            ),
            60,
            worker,
        )
        _expire_and_delete(stack, database, worker)
    finally:
        worker.stop()


def _expire_and_delete(stack: LocalStack, database: str, worker: Worker) -> None:
    """Items 9001-9003 expire 3 s after they are written, a user deletes item 9004: the
    change log has the TTL as the cause of the first three REMOVEs and a user of the last,
    and the live table keeps the expired items (``ttl_deletes`` ``keep``), not the deleted."""
    dynamodb = aws.client("dynamodb", stack.settings())
    started = time.monotonic()
    expires = int(time.time()) + 3
    for key in (9001, 9002, 9003, 9004):
        ttl = expires if key != 9004 else expires + 3600
        dynamodb.put_item(
            TableName="customers",
            Item={
                "userid": {"N": str(key)},
                "first_name": {"S": "T"},
                "expires_at": {"N": str(ttl)},
            },
        )
    dynamodb.delete_item(TableName="customers", Key={"userid": {"N": "9004"}})
    wait_for(
        "DynamoDB to expire items 9001-9003",
        lambda: (
            not dynamodb.scan(
                TableName="customers",
                ConsistentRead=True,
                FilterExpression="userid > :k",
                ExpressionAttributeValues={":k": {"N": "9000"}},
            )["Items"]
        ),
        60,
        worker,
    )
    causes = (
        "SELECT userid, _ddbcdc_removed_by FROM ddbcdc_changes__customers "
        "WHERE _ddbcdc_op = 'REMOVE' AND userid > 9000"
    )
    wait_for(
        "the worker to apply the four REMOVEs",
        lambda: len(query(database, causes)) == 4,
        120,
        worker,
    )
    assert dict(query(database, causes)) == {9001: "ttl", 9002: "ttl", 9003: "ttl", 9004: "user"}
    kept = query(database, "SELECT userid, first_name FROM customers WHERE userid > 9000")
    assert sorted(tuple(row) for row in kept) == [(9001, "T"), (9002, "T"), (9003, "T")]
    print(f"expired, archived and deleted in {time.monotonic() - started:.0f}s")


def _stream(stack: LocalStack) -> Stream:
    stream = open_stream(stack.settings(source="dynamodb-streams"))
    assert stream is not None
    return stream


def _progress(database: str, application: str) -> list[Any]:
    return query(
        database,
        "SELECT shard_id, ended_at FROM ddbcdc_shard_progress WHERE application = :a",
        a=application,
    )
