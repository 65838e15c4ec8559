"""The shard processor with the real pipeline and a real PostgreSQL (no Java).

- in process: a batch with a poison record lands in PostgreSQL (row, dead letter, shard
  progress) in one transaction, then the batch is checkpointed at its last record;
- PostgreSQL down (a TCP proxy that refuses connections): the same batch is retried until
  PostgreSQL is back, and nothing is checkpointed before that;
- as the daemon runs it (:func:`ddbcdc.worker.daemon.processor_command`, the installed
  entry point) in a subprocess: nothing but protocol lines on stdout.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from amazon_kclpy import kcl
from prometheus_client import CollectorRegistry

from ddbcdc.backoff import Backoff
from ddbcdc.decode.attributes import marshal
from ddbcdc.pipeline import Pipeline
from ddbcdc.schema.mapping import load_mappings
from ddbcdc.worker.daemon import processor_command
from ddbcdc.worker.metrics import ProcessorMetrics
from ddbcdc.worker.processor import ShardProcessor
from multilang_fake import Discard, FakeDaemon, initialize

ROOT = Path(__file__).resolve().parents[2]
MAPPINGS = load_mappings(ROOT / "schemas" / "tables")
SHARD = "shardId-000000000001"
US = 1_700_000_000_000_000


@pytest.fixture
def db(fresh_database: Callable[..., AbstractContextManager[str]]) -> Iterator[str]:
    """A fresh, migrated database per test."""
    with fresh_database("t_proc", mappings=MAPPINGS) as url:
        yield url


def change(userid: int, first_name: str, event: str = "INSERT") -> bytes:
    keys = {"userid": userid}
    body: dict[str, Any] = {
        "ApproximateCreationDateTime": US + userid,
        "Keys": marshal(keys),
        "SizeBytes": 42,
    }
    if event != "REMOVE":
        body["NewImage"] = marshal({**keys, "first_name": first_name})
    return orjson.dumps(
        {
            "awsRegion": "us-east-1",
            "eventID": uuid.uuid4().hex,
            "eventName": event,
            "recordFormat": "application/json",
            "tableName": "customers",
            "userIdentity": None,
            "dynamodb": body,
            "eventSource": "aws:dynamodb",
        }
    )


def batch(
    items: list[tuple[int, bytes]], behind: int = 0, arrival_ms: int = 1_700_000_000_000
) -> dict[str, Any]:
    return {
        "action": "processRecords",
        "millisBehindLatest": behind,
        "records": [
            {
                "action": "record",
                "data": base64.b64encode(data).decode(),
                "partitionKey": f"pk{seq}",
                "sequenceNumber": str(seq),
                "subSequenceNumber": None,
                "approximateArrivalTimestamp": arrival_ms,
            }
            for seq, data in items
        ],
    }


def customers(url: str) -> dict[int, str | None]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT userid, first_name FROM customers")).all()
    engine.dispose()
    return {r.userid: r.first_name for r in rows}


def scalar_rows(url: str, sql: str) -> list[Any]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = list(conn.execute(sa.text(sql)).all())
    engine.dispose()
    return rows


def run_processor(processor: ShardProcessor, daemon: FakeDaemon) -> None:
    kcl.KCLProcess(processor, input_file=daemon, output_file=daemon, error_file=Discard()).run()


def test_batch_with_a_poison_record_commits_then_checkpoints(db: str) -> None:
    pipeline = Pipeline(engine=sa.create_engine(db), mappings=MAPPINGS)
    registry = CollectorRegistry()
    processor = ShardProcessor(
        pipeline, application="app", metrics=ProcessorMetrics.create(registry)
    )
    daemon = FakeDaemon(
        [
            initialize(SHARD),
            batch([(101, change(1, " Ada ")), (102, b"\xff not json"), (103, change(2, "Bob"))]),
            batch([(104, change(1, "", "REMOVE"))], behind=7),
        ]
    )
    run_processor(processor, daemon)
    pipeline.close()

    assert daemon.checkpoints == ["103", "104"]
    assert customers(db) == {2: "Bob"}
    [letter] = scalar_rows(db, "SELECT stage, shard_id, sequence_number FROM ddbcdc_dead_letters")
    assert tuple(letter) == ("decode", SHARD, "102")
    [progress] = scalar_rows(
        db,
        "SELECT application, shard_id, sequence_number, records_total, batches_total, "
        "millis_behind_latest FROM ddbcdc_shard_progress",
    )
    assert tuple(progress) == ("app", SHARD, "104", 4, 2, 7)
    labels = {"shard": SHARD}
    assert registry.get_sample_value("ddbcdc_worker_dead_letters_total", labels) == 1
    assert registry.get_sample_value("ddbcdc_worker_records_total", labels) == 4


def test_freshness_is_observed_per_change_after_the_commit(db: str) -> None:
    """Write-to-commit and arrival-to-commit of every change that decoded, per table."""
    pipeline = Pipeline(engine=sa.create_engine(db), mappings=MAPPINGS)
    registry = CollectorRegistry()
    processor = ShardProcessor(
        pipeline, application="app", metrics=ProcessorMetrics.create(registry)
    )
    arrived_ms = int(time.time() * 1000) - 400  # 0.4 s before this batch is applied
    records = [(101, change(1, "Ada")), (102, b"\xff not json"), (103, change(2, "Bob"))]
    run_processor(processor, FakeDaemon([initialize(SHARD), batch(records, arrival_ms=arrived_ms)]))
    pipeline.close()

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"table": "customers", **labels})

    # two changes decoded (the poison record is not part of the copy)
    assert value("ddbcdc_worker_arrival_to_commit_seconds_count") == 2
    assert value("ddbcdc_worker_arrival_to_commit_seconds_bucket", le="0.25") == 0
    assert value("ddbcdc_worker_arrival_to_commit_seconds_bucket", le="5.0") == 2
    total = value("ddbcdc_worker_arrival_to_commit_seconds_sum")
    assert total is not None and 0.8 <= total < 10
    # the changes were made in 2023: write-to-commit is years, past the last bucket
    assert value("ddbcdc_worker_write_to_commit_seconds_count") == 2
    assert value("ddbcdc_worker_write_to_commit_seconds_bucket", le="86400.0") == 0
    assert value("ddbcdc_worker_newest_change_timestamp_seconds") == (US + 2) / 1e6
    [(newest, lag)] = scalar_rows(
        db,
        "SELECT newest_change_us, extract(epoch FROM committed_at) - newest_change_us / 1e6 "
        "FROM ddbcdc_table_progress WHERE application = 'app' AND target_table = 'customers'",
    )
    assert newest == US + 2 and lag > 0


class FlakyProxy:
    """A TCP proxy to PostgreSQL that refuses connections while ``down``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.down = True
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            if self.down:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()  # an unclosed socket is a ResourceWarning, an error in this suite

    def close(self) -> None:
        self.sock.close()


def test_postgres_down_retries_the_batch_and_checkpoints_only_after_commit(db: str) -> None:
    url = sa.make_url(db)
    proxy = FlakyProxy(url.port or 5432)
    engine = sa.create_engine(url.set(port=proxy.port), pool_pre_ping=True)
    pipeline = Pipeline(engine=engine, mappings=MAPPINGS)
    checkpoints_while_down: list[list[str | None]] = []
    daemon = FakeDaemon([initialize(SHARD), batch([(201, change(7, "Grace"))])])

    def sleep(seconds: float) -> None:
        checkpoints_while_down.append(list(daemon.checkpoints))
        if len(checkpoints_while_down) >= 3:
            proxy.down = False

    processor = ShardProcessor(
        pipeline,
        application="app",
        apply_backoff=Backoff(initial=0.01, maximum=0.02),
        sleep=sleep,
    )
    try:
        run_processor(processor, daemon)
    finally:
        pipeline.close()
        proxy.close()

    assert len(checkpoints_while_down) >= 3
    assert all(c == [] for c in checkpoints_while_down)
    assert daemon.checkpoints == ["201"]
    assert customers(db) == {7: "Grace"}
    retries = processor.metrics.apply_retries.labels(SHARD, "database")._value.get()
    assert retries >= 3


def test_entry_point_writes_only_protocol_to_stdout(db: str) -> None:
    lines = [
        initialize(SHARD),
        batch([(301, change(3, "Lin")), (302, change(4, "Kay"))]),
        {"action": "checkpoint", "sequenceNumber": "302", "subSequenceNumber": None},
        {"action": "shutdownRequested"},
        {"action": "leaseLost"},
    ]
    env = {
        **os.environ,
        "DATABASE_URL": db,
        "DDBCDC_APPLICATION_NAME": "entry",
        "DDBCDC_MAPPINGS_DIR": str(ROOT / "schemas" / "tables"),
        "DDBCDC_LOG_LEVEL": "DEBUG",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    result = subprocess.run(
        processor_command().split(" "),
        input="".join(json.dumps(m) + "\n" for m in lines),
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    sent = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert sent == [
        {"action": "status", "responseFor": "initialize"},
        {"action": "checkpoint", "sequenceNumber": "302", "subSequenceNumber": None},
        {"action": "status", "responseFor": "processRecords"},
        {"action": "status", "responseFor": "shutdownRequested"},
        {"action": "status", "responseFor": "leaseLost"},
    ]
    assert "batch applied shard=shardId-000000000001" in result.stderr
    assert "Lin" not in result.stderr and "Kay" not in result.stderr
    assert customers(db) == {3: "Lin", 4: "Kay"}


def test_entry_point_refuses_to_start_with_a_clear_error(tmp_path: Path) -> None:
    # Run from a folder holding a module that shadows a dependency: the daemon's command keeps
    # the working directory off sys.path, so it is never imported.
    (tmp_path / "amazon_kclpy.py").write_text("import sys; print('shadowed'); sys.exit(9)\n")
    env = {
        **os.environ,
        "DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none",
        "DDBCDC_MAPPINGS_DIR": str(tmp_path / "missing"),
    }
    result = subprocess.run(
        processor_command().split(" "),
        input=json.dumps(initialize(SHARD)) + "\n",
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert "shard processor cannot start" in result.stderr
    assert "does not exist" in result.stderr
