"""PostgreSQL's statement and lock timeouts are named, not silently retried.

A role whose ``statement_timeout`` a batch exceeds (a slow trigger), or whose ``lock_timeout``
expires while another transaction holds the table: the shard processor retries the same
batch with backoff and never checkpoints past it, and says which timeout it is in its retry
metric, its log line and ``ddbcdc status`` (failing, since when, how many attempts), until
the batch applies. Through the processor in memory (metrics, activity) and as the KCL daemon
runs it (``processor_command()``).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from amazon_kclpy import kcl
from prometheus_client import CollectorRegistry

from change_records import record
from ddbcdc.backoff import Backoff
from ddbcdc.cli import main
from ddbcdc.errors import DatabaseTimeoutError
from ddbcdc.pipeline import Pipeline, SourceRecord
from ddbcdc.schema.mapping import load_mappings
from ddbcdc.worker.daemon import processor_command
from ddbcdc.worker.failures import FailureNote
from ddbcdc.worker.metrics import ProcessorMetrics
from ddbcdc.worker.processor import ShardProcessor
from multilang_fake import Discard, FakeDaemon, initialize
from shop_records import image, shop_mapping
from shop_records import record as shop_record

ROOT = Path(__file__).resolve().parents[2]
MAPPINGS = load_mappings(ROOT / "schemas" / "tables")
SHARD = "shardId-000000000003"
US = 1_700_000_000_000_000
SLOW = (
    "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN PERFORM pg_sleep(3); RETURN NEW; END $$; "
    "CREATE TRIGGER slow BEFORE INSERT OR UPDATE ON customers FOR EACH ROW EXECUTE FUNCTION slow()"
)


@pytest.fixture
def db(fresh_database: Callable[..., AbstractContextManager[str]]) -> Iterator[str]:
    with fresh_database("t_timeout", mappings=MAPPINGS) as url:
        yield url


def tight(db: str, setting: str, value: str) -> Iterator[str]:
    """A role (a member of the tables' owner) whose sessions have ``setting`` = ``value``;
    its URL."""
    name = f"tight_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(db, isolation_level="AUTOCOMMIT")
    owner = sa.make_url(db).username
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE ROLE "{name}" LOGIN IN ROLE "{owner}"'))
        conn.execute(sa.text(f"ALTER ROLE \"{name}\" SET {setting} = '{value}'"))
    try:
        yield sa.make_url(db).set(username=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP ROLE "{name}"'))
        admin.dispose()


@pytest.fixture
def slow_role(db: str) -> Iterator[str]:
    yield from tight(db, "statement_timeout", "1s")


@pytest.fixture
def waiting_role(db: str) -> Iterator[str]:
    yield from tight(db, "lock_timeout", "200ms")


def sql(url: str, statement: str) -> list[Any]:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        result = conn.execute(sa.text(statement))
        rows = list(result) if result.returns_rows else []
    engine.dispose()
    return rows


def change(userid: int, name: str) -> bytes:
    image = {"first_name": name}
    return record("INSERT", {"userid": userid}, US + userid, image=image, eid=f"e{userid}")


def batch(seq: int, data: bytes) -> dict[str, Any]:
    return {
        "action": "processRecords",
        "millisBehindLatest": 0,
        "records": [
            {
                "action": "record",
                "data": base64.b64encode(data).decode(),
                "partitionKey": "pk",
                "sequenceNumber": str(seq),
                "subSequenceNumber": None,
                "approximateArrivalTimestamp": 1_700_000_000_000,
            }
        ],
    }


def status(capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    """``ddbcdc status --json`` (on DATABASE_URL): its exit status and the one shard."""
    code = main(["status", "--json"])
    [shard] = json.loads(capsys.readouterr().out)["shards"]
    return code, shard


def test_a_statement_timeout_is_named_retried_and_shown_until_the_batch_applies(
    db: str,
    slow_role: str,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", db)
    sql(db, SLOW)
    engine = sa.create_engine(slow_role)
    pipeline = Pipeline(engine=engine, mappings=MAPPINGS)
    registry = CollectorRegistry()
    metrics = ProcessorMetrics.create(registry)
    daemon = FakeDaemon([initialize(SHARD), batch(501, change(5, "Ann"))])
    seen: list[tuple[list[str | None], float | None, int, dict[str, Any]]] = []

    def sleep(seconds: float) -> None:  # between attempts at the batch
        in_call = registry.get_sample_value("ddbcdc_worker_in_call", {"shard": SHARD})
        seen.append((list(daemon.checkpoints), in_call, *status(capsys)))
        if len(seen) == 2:
            sql(db, "DROP TRIGGER slow ON customers")

    processor = ShardProcessor(
        pipeline,
        application="app",
        metrics=metrics,
        apply_backoff=Backoff(initial=0.01, maximum=0.02),
        sleep=sleep,
        failures=FailureNote(engine),
    )
    with caplog.at_level(logging.WARNING, logger="ddbcdc.worker.processor"):
        kcl.KCLProcess(processor, input_file=daemon, output_file=daemon, error_file=Discard()).run()
    pipeline.close()

    assert len(seen) >= 2
    for checkpoints, in_call, code, shard in seen:
        assert checkpoints == []  # never past the batch
        assert in_call == 1  # the processor is busy with the batch, not stalled
        assert code == 3 and shard["state"] == "failing"
        assert shard["failure"]["reason"] == "statement_timeout"
        assert shard["failure"]["sequence_number"] == "501"
        assert "SQLSTATE 57014" in shard["failure"]["error"] and "Ann" not in str(shard)
    assert seen[1][3]["failure"]["attempts"] > seen[0][3]["failure"]["attempts"]
    assert seen[1][3]["failure"]["since"] == seen[0][3]["failure"]["since"]
    assert daemon.checkpoints == ["501"]
    labels = {"shard": SHARD, "reason": "statement_timeout"}
    assert registry.get_sample_value("ddbcdc_worker_apply_retries_total", labels) >= 2
    assert "reason=statement_timeout" in caplog.text and "Ann" not in caplog.text
    code, shard = status(capsys)
    assert (code, shard["state"], shard["failure"]) == (0, "ok", None)


def test_a_lock_timeout_is_named_in_the_log_and_status_of_the_real_processor(
    db: str,
    waiting_role: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("DATABASE_URL", db)
    actions = [
        initialize(SHARD),
        batch(601, change(6, "Bea")),
        {"action": "checkpoint", "sequenceNumber": "601", "subSequenceNumber": None},
        {"action": "shutdownRequested"},
    ]
    env = {
        **os.environ,
        "DATABASE_URL": waiting_role,
        "DDBCDC_APPLICATION_NAME": "app",
        "DDBCDC_MAPPINGS_DIR": str(ROOT / "schemas" / "tables"),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    (tmp_path / "in").write_text("".join(json.dumps(a) + "\n" for a in actions))
    holder = sa.create_engine(db)
    with (
        holder.connect() as conn,
        (tmp_path / "in").open() as stdin,
        (tmp_path / "out").open("w") as stdout,
        (tmp_path / "err").open("w") as stderr,
    ):
        conn.execute(sa.text("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE"))
        proc = subprocess.Popen(
            processor_command().split(" "),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=env,
        )
        deadline = time.monotonic() + 90
        while not sql(db, "SELECT 1 FROM ddbcdc_shard_failures"):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.2)
        code, shard = status(capsys)
        conn.rollback()  # the lock goes: the next attempt applies the batch
        proc.wait(timeout=120)
    holder.dispose()
    out, err = (tmp_path / "out").read_text(), (tmp_path / "err").read_text()

    assert proc.returncode == 0, err
    assert (code, shard["state"], shard["failure"]["reason"]) == (3, "failing", "lock_timeout")
    assert "SQLSTATE 55P03" in shard["failure"]["error"]
    assert shard["sequence_number"] is None  # nothing applied yet, so nothing checkpointed
    sent = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert {"action": "checkpoint", "sequenceNumber": "601", "subSequenceNumber": None} in sent
    assert "reason=lock_timeout" in err and "Bea" not in err
    assert sql(db, "SELECT first_name FROM customers") == [("Bea",)]
    code, shard = status(capsys)
    assert (code, shard["state"], shard["failure"]) == (0, "ok", None)


def test_a_timeout_on_a_routed_batch_is_named_too(
    fresh_database: Callable[..., AbstractContextManager[str]],
) -> None:
    """A routed mapping's write that runs past ``statement_timeout`` (here while its batch is
    isolated: another change of it is refused) ends the batch with the timeout named, nothing
    committed, no item value in the error."""
    shop = shop_mapping()
    with fresh_database("t_timeout_routes", mappings=(shop,)) as db:
        sql(
            db,
            "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN PERFORM pg_sleep(3); RETURN NEW; END $$; "
            "CREATE TRIGGER slow BEFORE INSERT OR UPDATE ON shop_orders FOR EACH ROW "
            "WHEN (NEW.status = 'Slowpoke') EXECUTE FUNCTION slow(); "
            "ALTER TABLE shop_customers ADD CONSTRAINT no_bad CHECK (name <> 'bad')",
        )
        order, customer = ("CUSTOMER#1", "ORDER#2024-05-01#9"), ("CUSTOMER#2", "PROFILE")
        records = [
            shop_record("INSERT", customer, US, eid="c", item=image(customer, "c", "bad")),
            shop_record("INSERT", order, US, eid="o", item=image(order, "order", "Slowpoke")),
        ]
        for slow_db in tight(db, "statement_timeout", "1s"):
            engine = sa.create_engine(slow_db)
            pipeline = Pipeline(engine=engine, mappings=[shop])
            with pytest.raises(DatabaseTimeoutError) as raised:
                pipeline.process([SourceRecord(r) for r in records])
            pipeline.close()
            engine.dispose()
        assert raised.value.timeout == "statement_timeout"
        assert "57014" in str(raised.value) and "Slowpoke" not in str(raised.value)
        assert sql(db, "SELECT count(*) FROM ddbcdc_versions__shop") == [(0,)]
        assert sql(db, "SELECT count(*) FROM ddbcdc_dead_letters") == [(0,)]
