"""PostgreSQL down under a running ``ddbcdc worker``: the shard's checkpoint stays at the last
applied batch, and once PostgreSQL is back the batch waiting for it is applied within seconds,
not at the end of a retry backoff that has grown to tens of seconds; ``ddbcdc status`` and
``/healthz`` are quiet again once it has.

The worker reads a one-shard stream of its own, against a PostgreSQL of this test's own (it is
crashed on purpose; durable, so the commit before the crash survives it, as on a real server).
PostgreSQL is started again right after the processor logged a retry delay of
:data:`LONG_DELAY_S` or more: without the early retry the batch waits that long.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from cluster import (
    ROOT,
    Worker,
    customers_table,
    leases,
    query,
    shard_sequences,
    wait_for,
    worker_env,
)

from ddbcdc.aws import clients as aws
from ddbcdc.local.postgres import TemporaryPostgres
from ddbcdc.local.stack import LocalStack
from ddbcdc.migrate.run import upgrade

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LONG_DELAY_S = 10.0
#: From PostgreSQL started until the waiting batch is in: a second to notice, the batch, and
#: a slow machine; without the early retry it is at least LONG_DELAY_S less the start.
APPLIED_WITHIN_S = 6.0
STATUS = (sys.executable, "-m", "ddbcdc.cli", "status", "--json")
CLIENT_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")


@pytest.fixture
def own_postgres() -> Iterator[TemporaryPostgres]:
    with TemporaryPostgres(durable=True) as pg:
        yield pg


def retry_delays(log: Path) -> list[float]:
    """The delays of every ``batch not applied, will retry`` line logged so far."""
    text = log.read_text(errors="replace")
    return [
        float(d) for d in re.findall(r"batch not applied, will retry .*?delay_s=([\d.]+)", text)
    ]


def checkpoints(stack: LocalStack, application: str) -> list[str | None]:
    return [r.checkpoint for r in leases(stack, application).values()]


def userids(url: str) -> set[int]:
    return {r.userid for r in query(url, "SELECT userid FROM customers")}


def test_a_batch_waiting_for_postgresql_is_applied_as_soon_as_it_is_back(
    local_stack: LocalStack,
    own_postgres: TemporaryPostgres,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in CLIENT_ENV:
        monkeypatch.setenv(name, local_stack.env[name])
    url, application = own_postgres.url, f"outage-{uuid.uuid4().hex[:8]}"
    with customers_table(local_stack, tmp_path / "mappings", shards=1) as made:
        engine = sa.create_engine(url)
        upgrade(engine, (made.mapping,))
        engine.dispose()
        env = worker_env(
            local_stack,
            url,
            made.stream,
            DDBCDC_MAPPINGS_DIR=str(made.mappings_dir),
            DDBCDC_APPLICATION_NAME=application,
        )
        dynamodb = aws.client("dynamodb", local_stack.settings())
        log = tmp_path / "worker.log"
        worker = Worker(env, log)
        try:
            dynamodb.put_item(TableName=made.table, Item={"userid": {"N": "1"}})
            wait_for("the first change applied", lambda: userids(url) == {1}, 120, worker)
            (first,) = shard_sequences(url, application).values()
            wait_for(
                "its checkpoint",
                lambda: checkpoints(local_stack, application) == [str(first)],
                30,
                worker,
            )

            own_postgres.crash()
            dynamodb.put_item(TableName=made.table, Item={"userid": {"N": "2"}})
            wait_for(
                f"a retry delay of {LONG_DELAY_S:.0f} s or more",
                lambda: any(d >= LONG_DELAY_S for d in retry_delays(log)),
                90,
                worker,
                every=0.2,
            )
            held = checkpoints(local_stack, application)
            own_postgres.restart()
            took = wait_for("the waiting change", lambda: userids(url) == {1, 2}, 60, worker)
            code, health = worker.get("/healthz")
            status = subprocess.run(
                [*STATUS, "--application-name", application],
                env=env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            stopped = worker.stop()

    print(f"the waiting batch was applied {took:.1f} s after PostgreSQL started again")
    assert held == [str(first)]  # never past the batch PostgreSQL did not take
    assert took < APPLIED_WITHIN_S, worker.log_tail()
    text = log.read_text()
    assert "PostgreSQL answers again, retrying now" in text
    # the one shard was registered once, and said so once
    assert re.findall(r"shards registered application=\S+ new=(-?\d+)", text) == ["1"]
    assert (code, health.strip()) == (200, "ok")
    (shard,) = json.loads(status.stdout)["shards"]
    assert (status.returncode, shard["state"], shard["failure"]) == (0, "ok", None)
    assert stopped == 0
