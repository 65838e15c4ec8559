"""A single-table design copied by ``ddbcdc snapshot`` into a table per entity, then
``ddbcdc verify [--repair]``, against moto and a real PostgreSQL: every route's table equals
the items of its entity, the catch-all exactly the unmatched ones; drift put in by hand (an
edited row, a row gone, a row of no item, an item in the wrong table) is found and repaired
through the versioned path; the in-memory comparison of each route agrees."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from backfill_support import BackfillTable, shop_table
from ddbcdc.cli import main
from ddbcdc.decode.attributes import marshal
from ddbcdc.local.stack import LocalStack
from ddbcdc.verify.compare import compare, compare_routes

CUSTOMERS = [{"PK": f"CUSTOMER#{n}", "SK": "PROFILE", "name": f"c{n}"} for n in range(1, 21)]
ORDERS = [
    {"PK": f"CUSTOMER#{n}", "SK": f"ORDER#2024-05-{n:02d}#{n}", "_et": "order", "total": n}
    for n in range(1, 21)
]
CARTS = [
    {"PK": f"CUSTOMER#{n}", "SK": f"ORDER#2024-06-01#{100 + n}", "_et": "cart"} for n in range(1, 6)
]
LINES = [
    {"PK": f"ORDER#{n}", "SK": f"LINE#{i}", "sku": f"s{i}"} for n in range(1, 11) for i in (1, 2)
]
ODD = [{"PK": "CUSTOMER#007", "SK": "PROFILE", "name": "not customer 7"}]


@pytest.fixture
def table(
    local_stack: LocalStack,
    fresh_database: Callable[..., AbstractContextManager[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[BackfillTable]:
    with shop_table(local_stack, fresh_database, tmp_path, monkeypatch=monkeypatch) as made:
        monkeypatch.delenv("DDBCDC_STREAM_NAME", raising=False)  # no stream: a static copy
        made.put([marshal(i) for i in CUSTOMERS + ORDERS + CARTS + LINES + ODD])
        assert main(["snapshot", "--force", "--no-progress"]) == 0
        yield made


def verify(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = main(["verify", "--json", "--no-progress", "--segments", "2", *args])
    return code, json.loads(capsys.readouterr().out)


def counts(table: BackfillTable) -> dict[str, int]:
    found = {}
    for name in ("shop_customers", "shop_orders", "shop_order_lines", "shop_unmatched"):
        found[name] = table.query(f"SELECT count(*) FROM {name}")[0][0]
    return found


def test_every_table_equals_the_items_of_its_entity(
    table: BackfillTable, capsys: pytest.CaptureFixture[str]
) -> None:
    assert counts(table) == {
        "shop_customers": 20,
        "shop_orders": 20,
        "shop_order_lines": 20,
        "shop_unmatched": 6,  # the carts and CUSTOMER#007 (not customer 7), whole
    }
    code, report = verify(capsys)
    assert code == 0 and report["drift"] is False
    assert report["items"] == report["rows"] == 66 and report["suspects"] == 0
    with _engine(table) as engine:
        comparisons = compare_routes(table.client(), engine, table.mapping)
    assert [(c.target_table, c.source_items, c.matches) for c in comparisons] == [
        ("shop_customers", 20, True),
        ("shop_orders", 20, True),
        ("shop_order_lines", 20, True),
        ("shop_unmatched", 6, True),
    ]
    unmatched = table.query("SELECT coalesce(item->>'_et', '-'), pk FROM shop_unmatched")
    expected = [("cart", c["PK"]) for c in CARTS] + [("-", "CUSTOMER#007")]
    assert sorted(unmatched) == sorted(expected)


@contextmanager
def _engine(table: BackfillTable) -> Iterator[sa.Engine]:
    engine = sa.create_engine(table.database_url)
    try:
        yield engine
    finally:
        engine.dispose()


def test_drift_in_any_route_is_found_and_repaired(
    table: BackfillTable, capsys: pytest.CaptureFixture[str]
) -> None:
    table.execute("UPDATE shop_customers SET name = 'hand edit' WHERE customer_id = 3")
    table.execute("DELETE FROM shop_orders WHERE order_id = 4")
    table.execute(
        "INSERT INTO shop_order_lines (order_id, line_no, sku, _ddbcdc_version_us, "
        "_ddbcdc_event_id) VALUES (99, 1, 'ghost', 1, 'by hand')"
    )
    # a cart put in the orders table by hand (and left in the catch-all too)
    table.execute(
        "INSERT INTO shop_orders (customer_id, order_date, order_id, _ddbcdc_version_us, "
        "_ddbcdc_event_id) VALUES (1, '2024-06-01', 101, 1, 'by hand')"
    )
    code, report = verify(capsys)
    assert code == 1 and report["drift"] is True
    assert (report["missing"], report["extra"], report["different"]) == (1, 1, 2)
    keys = {(s["kind"], s["key"]["pk"], s["key"]["sk"]) for s in report["samples"]}
    assert keys == {
        ("different", "CUSTOMER#3", "PROFILE"),
        ("missing", "CUSTOMER#4", "ORDER#2024-05-04#4"),
        ("extra", "ORDER#99", "LINE#1"),
        ("different", "CUSTOMER#1", "ORDER#2024-06-01#101"),  # in two tables
    }
    with _engine(table) as engine:
        assert not compare(table.client(), engine, table.mapping).matches

    code, repaired = verify(capsys, "--repair")
    assert code == 1 and repaired["repaired"] == 4
    code, after = verify(capsys)
    assert code == 0 and after["rows"] == 66
    assert counts(table)["shop_orders"] == 20
    assert table.query("SELECT name FROM shop_customers WHERE customer_id = 3") == [("c3",)]
    assert table.query("SELECT count(*) FROM shop_orders WHERE order_id = 101") == [(0,)]
    assert table.query("SELECT count(*) FROM shop_unmatched WHERE sk = 'ORDER#2024-06-01#101'") == [
        (1,)
    ]
    routes = table.query(
        "SELECT _ddbcdc_route FROM ddbcdc_versions__shop WHERE pk = 'ORDER#99' AND sk = 'LINE#1'"
    )
    assert routes == [(None,)]  # the ghost line's key: a tombstone, in no table
