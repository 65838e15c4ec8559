"""The real KCL daemon on the local stack: AT_TIMESTAMP start positions, enhanced fan-out.

Each test writes Kinesis-format records straight into a stream of its own on the session's
kinesis-local (so it knows exactly what arrived when) and runs ``ddbcdc worker`` on a fresh
database.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ddbcdc.aws import clients as aws
from ddbcdc.local.stack import LocalStack
from ddbcdc.schema.mapping import load_mappings
from worker_runs import (
    MAPPINGS_DIR,
    WorkerRun,
    applied_userids,
    arrivals,
    create_stream,
    progress,
    put_changes,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

APPLIED_TIMEOUT_S = 180.0


@pytest.fixture
def database(fresh_database: Callable[..., AbstractContextManager[str]]) -> Iterator[str]:
    with fresh_database("t_retrieval", mappings=load_mappings(MAPPINGS_DIR)) as url:
        yield url


@pytest.fixture
def kinesis(local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A client of the stack's kinesis-local; this process talks to it with its credentials."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        monkeypatch.setenv(name, local_stack.env[name])
    return aws.client("kinesis", local_stack.settings())


def worker_env(stack: LocalStack, database: str, stream: str, **more: str) -> dict[str, str]:
    return stack.worker_env(
        os.environ,
        DATABASE_URL=database,
        DDBCDC_STREAM_NAME=stream,
        DDBCDC_MAPPINGS_DIR=str(MAPPINGS_DIR),
        DDBCDC_FAILOVER_TIME_MS="3000",
        DDBCDC_SHUTDOWN_GRACE_MS="10000",
        DDBCDC_IDLE_TIME_BETWEEN_READS_MS="200",
        **more,
    )


def test_at_timestamp_skips_what_arrived_before_and_applies_what_arrived_after(
    local_stack: LocalStack, kinesis: Any, database: str, tmp_path: Path
) -> None:
    stream = f"ddbcdc-at-{uuid.uuid4().hex[:6]}"
    create_stream(kinesis, stream)
    before, after = range(1, 41), range(101, 141)
    put_changes(kinesis, stream, before)
    # the KCL takes whole seconds: start at the first whole second after the last record
    # before (and one more, for the clock's resolution), and put the rest after that
    start = math.floor(max(arrivals(kinesis, stream).values())) + 2
    while time.time() < start + 0.2:
        time.sleep(0.05)
    last = put_changes(kinesis, stream, after)
    arrived = arrivals(kinesis, stream)
    assert max(arrived[u] for u in before) < start <= min(arrived[u] for u in after)

    application = f"at-{uuid.uuid4().hex[:6]}"
    when = datetime.fromtimestamp(start, UTC).isoformat()
    env = worker_env(local_stack, database, stream, DDBCDC_APPLICATION_NAME=application)
    worker = WorkerRun(env, tmp_path / "worker.log", "--initial-timestamp", when)
    try:
        worker.wait_for(
            "every shard to reach its last record",
            lambda: progress(database, application) == last,
            APPLIED_TIMEOUT_S,
        )
        # records of a shard are applied in order: had any before the timestamp been read,
        # it would be there by now
        assert applied_userids(database) == set(after)
    finally:
        code = worker.stop()
    assert code == 0, worker.tail()
    log = worker.log()
    assert f"initialPositionInStreamExtended, value={start})" in log
    assert "position=AT_TIMESTAMP" in log


def test_fanout_registers_the_named_consumer_and_applies_every_record(
    local_stack: LocalStack, kinesis: Any, database: str, tmp_path: Path
) -> None:
    stream = f"ddbcdc-efo-{uuid.uuid4().hex[:6]}"
    create_stream(kinesis, stream)
    last = put_changes(kinesis, stream, range(1, 61))
    application, consumer = f"efo-{uuid.uuid4().hex[:6]}", f"cdc-{uuid.uuid4().hex[:6]}"
    env = worker_env(
        local_stack,
        database,
        stream,
        DDBCDC_APPLICATION_NAME=application,
        DDBCDC_RETRIEVAL_MODE="FANOUT",
        DDBCDC_CONSUMER_NAME=consumer,
    )
    worker = WorkerRun(env, tmp_path / "worker.log")
    try:
        worker.wait_for(
            "every shard to reach its last record",
            lambda: progress(database, application) == last,
            APPLIED_TIMEOUT_S,
        )
        assert applied_userids(database) == set(range(1, 61))
        arn = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"][
            "StreamARN"
        ]
        consumers = kinesis.list_stream_consumers(StreamARN=arn)["Consumers"]
        assert [(c["ConsumerName"], c["ConsumerStatus"]) for c in consumers] == [
            (consumer, "ACTIVE")
        ]
    finally:
        code = worker.stop()
    assert code == 0, worker.tail()
    log = worker.log()
    assert "(key=retrievalMode, value=FANOUT)" in log
    assert "maxRecords" not in log  # no polling settings under FANOUT
