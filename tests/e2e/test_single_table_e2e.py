"""A single-table design end to end on the local stack: a table per entity, live.

The ``shop`` table (customers, orders and carts, order lines; key PK, SK) holds items before it
streams (only a snapshot can bring those), then the real ``ddbcdc worker`` copies it through
the shipped routed mapping while the loader writes (entity changes: carts becoming orders and
back, delete-then-reinsert) and ``ddbcdc snapshot`` scans it. At the end every route's table
equals the items of its entity, the catch-all exactly the unmatched ones (the carts), nothing
is dead-lettered, and ``ddbcdc verify`` finds no drift.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
import sqlalchemy as sa
from test_backfill_e2e import ddbcdc
from test_worker_e2e import Worker, leases, wait_for

from backfill_support import BackfillTable, shop_table
from ddbcdc.aws import clients as aws
from ddbcdc.aws.provision import ProvisionOptions, set_up
from ddbcdc.aws.resources import KEY_SCHEMAS
from ddbcdc.load.plan import LoadOptions, plan_operations
from ddbcdc.load.shop import shop_key_index
from ddbcdc.load.writer import run_load, scan_items
from ddbcdc.local.stack import LocalStack
from ddbcdc.verify.compare import Comparison, compare_routes

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CUSTOMERS = 30


@pytest.fixture
def table(
    local_stack: LocalStack,
    fresh_database: Callable[..., AbstractContextManager[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[BackfillTable]:
    with shop_table(local_stack, fresh_database, tmp_path, monkeypatch=monkeypatch) as made:
        made.env.update(
            DDBCDC_STREAM_NAME=f"{made.name}-stream",
            DDBCDC_CLOCK_SKEW_MARGIN="PT2S",
            DDBCDC_FAILOVER_TIME_MS="3000",
            DDBCDC_IDLE_TIME_BETWEEN_READS_MS="200",
        )
        yield made


def load(table: BackfillTable, options: LoadOptions) -> None:
    client = aws.client("dynamodb", table.stack.settings(), max_attempts=1)
    known = shop_key_index(options.keys)
    existing = scan_items(client, table.name, lambda i: known.get((i["PK"], i["SK"])))
    operations = list(plan_operations(options, existing=existing))
    assert run_load(client, options, operations=operations).errors == 0


def comparisons(table: BackfillTable) -> list[Comparison]:
    engine = sa.create_engine(table.database_url)
    try:
        return compare_routes(table.client(), engine, table.mapping)
    finally:
        engine.dispose()


def test_a_table_per_entity_with_the_worker_a_snapshot_and_verify(
    table: BackfillTable, tmp_path: Path
) -> None:
    model = {"table": table.name, "keys": CUSTOMERS, "model": "single-table"}
    load(table, LoadOptions(count=300, mix={"insert": 1}, seed=5, **model))  # before the stream
    set_up(
        table.client(),
        table.client("kinesis"),
        ProvisionOptions(
            table=table.name,
            key=KEY_SCHEMAS["single-table"],
            stream=table.env["DDBCDC_STREAM_NAME"],
            local=True,
        ),
    )
    application = table.env["DDBCDC_APPLICATION_NAME"]
    worker = Worker({**os.environ, **table.env}, tmp_path / "worker.log")
    changes = LoadOptions(
        count=900, mix={"insert": 30, "modify": 50, "remove": 20}, seed=9, rate=60, **model
    )
    loading = threading.Thread(target=load, args=(table, changes))
    try:
        wait_for(
            "the worker to hold every lease",
            lambda: (
                len(leases(table.stack, application)) == 2
                and all(v["owner"] for v in leases(table.stack, application).values())
            ),
            150,
            worker,
        )
        loading.start()
        snapshot = ddbcdc(table, "snapshot", "--segments", "2", "--no-progress")
        assert snapshot.returncode == 0, snapshot.stderr
        loading.join(timeout=240)
        assert not loading.is_alive()
        wait_for(
            "every table to equal the items of its entity",
            lambda: all(c.matches for c in comparisons(table)),
            180,
            worker,
            every=2,
        )
        found = {c.target_table: c for c in comparisons(table)}
        assert set(found) == {"shop_customers", "shop_orders", "shop_order_lines", "shop_unmatched"}
        assert all(c.source_items > 0 for c in found.values())
        carts = table.query("SELECT count(*) FROM shop_unmatched WHERE item->>'_et' = 'cart'")
        assert carts == [(found["shop_unmatched"].target_rows,)]  # the catch-all: the carts
        assert table.query("SELECT count(*) FROM ddbcdc_dead_letters") == [(0,)]
        checked = ddbcdc(table, "verify", "--json", "--no-progress", "--settle-timeout", "60")
        report = json.loads(checked.stdout)
        assert checked.returncode == 0, (checked.stdout, checked.stderr)
        assert report["drift"] is False and report["rows"] == report["items"]
        moved = table.query(
            "SELECT count(*) FROM ddbcdc_versions__shop "
            "WHERE _ddbcdc_prev_route IS NOT NULL AND _ddbcdc_prev_route <> _ddbcdc_route"
        )
        assert moved[0][0] > 0  # entity changes moved rows between tables
    finally:
        code = worker.stop()
        loading.join(timeout=60)
    assert code == 0, worker.log_tail()
    assert "Traceback" not in worker.log_path.read_text(errors="replace")
