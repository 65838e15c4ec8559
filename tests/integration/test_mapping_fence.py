"""Two hosts with different mappings never write one table: a writer started with the old
mapping is fenced by ``ddbcdc migrate`` in the transaction of its next batch, and nothing it
read is lost (``ddbcdc apply`` names the records it did not apply; a shard processor exits
without checkpointing)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO, Any

import orjson
import pytest
import sqlalchemy as sa
from evolution_support import shipped

from ddbcdc.decode.attributes import marshal
from ddbcdc.errors import MappingChangedError
from ddbcdc.materialize.prune import lock_key
from ddbcdc.migrate.versions import fence_writers, record_mapping_version
from ddbcdc.pipeline import Pipeline, SourceRecord
from ddbcdc.schema.mapping import load_mappings
from multilang_fake import initialize

ROOT = Path(__file__).resolve().parents[2]
US = 1_700_000_000_000_000
SHARD = "shardId-000000000001"


@pytest.fixture
def db(fresh_database: Callable[..., AbstractContextManager[str]]) -> Iterator[str]:
    with fresh_database("t_fence") as url:
        yield url


def mappings_dir(folder: Path, *, city: bool) -> Path:
    """The shipped customers mapping, with a ``city`` column when ``city``."""
    doc = shipped()
    if city:
        doc["columns"].append({"name": "city", "type": "text"})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "customers.json").write_text(json.dumps(doc))
    return folder


def change(event: str, userid: int, us: int, **image: Any) -> bytes:
    return orjson.dumps(
        {
            "eventID": uuid.uuid4().hex,
            "eventName": event,
            "tableName": "customers",
            "eventSource": "aws:dynamodb",
            "dynamodb": {
                "ApproximateCreationDateTime": us,
                "Keys": marshal({"userid": userid}),
                "NewImage": marshal({"userid": userid, **image}),
            },
        }
    )


def env_for(db: str, mappings: Path) -> dict[str, str]:
    env = {**os.environ, "DATABASE_URL": db, "DDBCDC_MAPPINGS_DIR": str(mappings)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


def ddbcdc(*args: str, env: dict[str, str], data: bytes | None = None) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "ddbcdc.cli", *args],
        input=data,
        capture_output=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def row(db: str, userid: int) -> tuple[Any, ...] | None:
    engine = sa.create_engine(db)
    try:
        with engine.connect() as conn:
            found = conn.execute(
                sa.text("SELECT * FROM customers WHERE userid = :u"), {"u": userid}
            ).first()
    finally:
        engine.dispose()
    return None if found is None else tuple(found._mapping.items())


def city_and_kept(db: str, userid: int) -> tuple[Any, Any]:
    found = dict(row(db, userid) or ())
    return found.get("city"), (found.get("attributes") or {}).get("city")


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_apply_started_before_migrate_is_fenced_and_loses_nothing(db: str, tmp_path: Path) -> None:
    old = env_for(db, mappings_dir(tmp_path / "old", city=False))
    new = env_for(db, mappings_dir(tmp_path / "new", city=True))
    assert ddbcdc("migrate", env=old).returncode == 0
    writer = subprocess.Popen(
        [sys.executable, "-m", "ddbcdc.cli", "apply", "-", "--batch-size", "1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=old,
        cwd=ROOT,
    )
    assert writer.stdin is not None
    try:
        writer.stdin.write(change("INSERT", 1, US, first_name="Ada", city="Old") + b"\n")
        writer.stdin.flush()
        wait_for(lambda: row(db, 1) is not None, "the INSERT")
        migrated = ddbcdc("migrate", env=new)
        assert migrated.returncode == 0, migrated.stderr
        assert city_and_kept(db, 1) == ("Old", None)  # backfilled from the kept attributes
        modify = change("MODIFY", 1, US + 1, first_name="Ada", city="New")
        _, err = writer.communicate(modify + b"\n", timeout=60)
    finally:
        writer.kill()
        writer.wait()
    message = err.decode()
    assert writer.returncode == 2, message
    assert "ddbcdc apply: stopped:" in message and "column 'city' added" in message
    assert "the records from line 2 on" in message and "Traceback" not in message
    assert city_and_kept(db, 1) == ("Old", None)  # the old writer wrote nothing

    # Nothing lost: the record it named, applied with the table's mapping, lands.
    again = ddbcdc("apply", "-", env=new, data=modify + b"\n")
    assert again.returncode == 0, again.stderr
    assert city_and_kept(db, 1) == ("New", None)


def test_apply_started_with_hard_deletes_is_fenced_when_migrate_makes_them_soft(
    db: str, tmp_path: Path
) -> None:
    """A change of the delete modes is a change of the mapping: a writer still deleting rows
    hard stops before its REMOVE deletes a row the table now keeps, and names the change."""
    old = env_for(db, mappings_dir(tmp_path / "old", city=False))
    soft = {**shipped(), "deletes": "soft"}
    (tmp_path / "soft").mkdir()
    (tmp_path / "soft" / "customers.json").write_text(json.dumps(soft))
    new = env_for(db, tmp_path / "soft")
    assert ddbcdc("migrate", env=old).returncode == 0
    writer = subprocess.Popen(
        [sys.executable, "-m", "ddbcdc.cli", "apply", "-", "--batch-size", "1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=old,
        cwd=ROOT,
    )
    assert writer.stdin is not None
    remove = orjson.dumps(
        {
            "eventID": "remove-1",
            "eventName": "REMOVE",
            "tableName": "customers",
            "eventSource": "aws:dynamodb",
            "dynamodb": {
                "ApproximateCreationDateTime": US + 1,
                "Keys": marshal({"userid": 1}),
                "OldImage": marshal({"userid": 1, "first_name": "Ada"}),
            },
        }
    )
    try:
        writer.stdin.write(change("INSERT", 1, US, first_name="Ada") + b"\n")
        writer.stdin.flush()
        wait_for(lambda: row(db, 1) is not None, "the INSERT")
        migrated = ddbcdc("migrate", env=new)
        assert migrated.returncode == 0, migrated.stderr
        _, err = writer.communicate(remove + b"\n", timeout=60)
    finally:
        writer.kill()
        writer.wait()
    message = err.decode()
    assert writer.returncode == 2, message
    assert "deletes 'hard' -> 'soft'" in message and "Traceback" not in message
    still = row(db, 1)
    assert still is not None and dict(still)["_ddbcdc_deleted_at"] is None  # not deleted

    again = ddbcdc("apply", "-", env=new, data=remove + b"\n")
    assert again.returncode == 0, again.stderr
    kept = dict(row(db, 1) or ())
    assert kept["first_name"] == "Ada" and kept["_ddbcdc_deleted_at"] is not None


class Processor:
    """``workers/record_processor.py`` as the KCL daemon runs it, driven line by line."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "workers" / "record_processor.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**env, "DDBCDC_APPLICATION_NAME": "fence"},
            cwd=ROOT,
        )
        self.checkpoints: list[str] = []

    def _send(self, message: dict[str, Any]) -> None:
        stdin: IO[bytes] | None = self.process.stdin
        assert stdin is not None
        stdin.write(json.dumps(message).encode() + b"\n")
        stdin.flush()

    def action(self, message: dict[str, Any]) -> str | None:
        """Send an action; answer its checkpoints; the action it reported done (None: the
        processor exited instead)."""
        self._send(message)
        assert self.process.stdout is not None
        while line := self.process.stdout.readline():
            if not line.strip():
                continue
            reply = json.loads(line)
            if reply["action"] == "checkpoint":
                self.checkpoints.append(reply["sequenceNumber"])
                self._send({**reply, "error": None})
            elif reply["action"] == "status":
                return str(reply["responseFor"])
        return None

    def records(self, *items: tuple[int, bytes]) -> dict[str, Any]:
        return {
            "action": "processRecords",
            "millisBehindLatest": 0,
            "records": [
                {
                    "action": "record",
                    "data": base64.b64encode(data).decode(),
                    "partitionKey": f"pk{seq}",
                    "sequenceNumber": str(seq),
                    "subSequenceNumber": None,
                    "approximateArrivalTimestamp": 1_700_000_000_000,
                }
                for seq, data in items
            ],
        }


def test_a_shard_processor_with_the_old_mapping_stops_without_checkpointing(
    db: str, tmp_path: Path
) -> None:
    old = env_for(db, mappings_dir(tmp_path / "old", city=False))
    new = env_for(db, mappings_dir(tmp_path / "new", city=True))
    assert ddbcdc("migrate", env=old).returncode == 0
    processor = Processor(old)
    try:
        assert processor.action(initialize(SHARD)) == "initialize"
        first = change("INSERT", 1, US, first_name="Ada", city="Old")
        assert processor.action(processor.records((101, first))) == "processRecords"
        assert processor.checkpoints == ["101"]
        assert ddbcdc("migrate", env=new).returncode == 0
        later = change("MODIFY", 1, US + 1, first_name="Ada", city="New")
        assert processor.action(processor.records((102, later))) is None
        _, err = processor.process.communicate(timeout=60)
    finally:
        processor.process.kill()
        processor.process.wait()
    assert processor.process.returncode == 2
    assert processor.checkpoints == ["101"]  # 102 is not checkpointed: the next owner applies it
    message = err.decode()
    assert "mapping changed, shard processor stopping" in message
    assert "column 'city' added" in message and "New" not in message
    assert city_and_kept(db, 1) == ("Old", None)


def test_a_batch_waits_for_a_migration_in_flight_then_stops(db: str, tmp_path: Path) -> None:
    """The lock protocol itself: migrate holds the table's write lock exclusively until its
    commit; a batch that starts meanwhile waits, then finds the new version and commits
    nothing (any writer through the pipeline: apply, replay, backfill, repair)."""
    old_dir = mappings_dir(tmp_path / "old", city=False)
    assert ddbcdc("migrate", env=env_for(db, old_dir)).returncode == 0
    (old,) = load_mappings(old_dir)
    (new,) = load_mappings(mappings_dir(tmp_path / "new", city=True))
    engine = sa.create_engine(db)
    writers = {
        "stream": Pipeline(engine=engine, mappings=[old]),
        "backfill": Pipeline(engine=engine, mappings=[old], change_log=False),
    }
    record = SourceRecord(change("INSERT", 2, US, first_name="Bo", city="Here"))
    outcomes: dict[str, BaseException | None] = {}

    def write(name: str) -> None:
        try:
            writers[name].process([record])
            outcomes[name] = None
        except BaseException as exc:  # the test reads it
            outcomes[name] = exc

    try:
        with engine.connect() as migration:
            with migration.begin():
                assert fence_writers(migration, [new]) == ["customers"]
                threads = [threading.Thread(target=write, args=(n,)) for n in writers]
                for thread in threads:
                    thread.start()
                time.sleep(1.0)
                assert outcomes == {}  # both wait for the migration
                migration.exec_driver_sql("ALTER TABLE customers ADD COLUMN city text")
                record_mapping_version(migration, new)
            for thread in threads:
                thread.join(timeout=30)
    finally:
        engine.dispose()
    for name in writers:
        assert isinstance(outcomes[name], MappingChangedError), outcomes
        assert "column 'city' added" in str(outcomes[name])
    assert row(db, 2) is None


def test_migrate_waits_for_a_batch_in_flight(db: str, tmp_path: Path) -> None:
    old_dir = mappings_dir(tmp_path / "old", city=False)
    assert ddbcdc("migrate", env=env_for(db, old_dir)).returncode == 0
    engine = sa.create_engine(db)
    try:
        with engine.connect() as batch, batch.begin():  # a batch holds the lock shared
            batch.execute(sa.select(sa.func.pg_advisory_xact_lock_shared(lock_key("customers"))))
            migrate = subprocess.Popen(
                [sys.executable, "-m", "ddbcdc.cli", "migrate"],
                env=env_for(db, mappings_dir(tmp_path / "new", city=True)),
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            waiting = sa.text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            )
            with engine.connect() as probe:
                wait_for(
                    lambda: migrate.poll() is not None or probe.execute(waiting).scalar() == 1,
                    "migrate to wait or finish",
                )
            assert migrate.poll() is None  # it waits for the batch to commit
    finally:
        engine.dispose()
    assert migrate.wait(timeout=60) == 0
