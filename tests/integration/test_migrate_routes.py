"""``ddbcdc migrate`` over a routed mapping, on a real PostgreSQL: a new route gets its table
and takes its items from the catch-all (through its own cleansing; what does not fit is a
dead letter and stays, until a replay moves it); a removed route is destructive; reordered
routes, a route added before others, a changed match are no migration."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import orjson
import psycopg
import pytest
import sqlalchemy as sa

from ddbcdc.errors import ConfigurationError
from ddbcdc.materialize.deadletters import list_dead_letters
from ddbcdc.migrate.fill import Filler
from ddbcdc.migrate.replay import replay_backfill
from ddbcdc.migrate.run import format_plan, migrate
from ddbcdc.pipeline import Pipeline, SourceRecord
from ddbcdc.schema.mapping import TableMapping, parse_mapping
from shop_records import SHOP_FILE, image, record

US = 1_700_000_000_000_000
CARTS = [("CUSTOMER#1", f"ORDER#2024-05-01#{n}") for n in range(1, 6)]
CARTS_ROUTE = {
    "target_table": "shop_carts",
    "match": {"PK": "CUSTOMER#{customer_id}", "SK": "ORDER#{order_date}#{cart_id}", "_et": "cart"},
    "columns": [
        {"name": "customer_id", "type": "bigint"},
        {"name": "order_date", "type": "date"},
        {"name": "cart_id", "type": "bigint"},
        {"name": "total", "type": "numeric"},
    ],
    "extra": {"column": "attributes"},
}


def document(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(SHOP_FILE.read_text())
    doc.update(changes)
    return doc


def mapping(doc: dict[str, Any]) -> TableMapping:
    return parse_mapping(copy.deepcopy(doc), name="shop")


@pytest.fixture
def engine(fresh_database: Callable[..., AbstractContextManager[str]]) -> Iterator[sa.Engine]:
    with fresh_database("t_migrate_routes") as url:
        made = sa.create_engine(url)
        yield made
        made.dispose()


def load(engine: sa.Engine, shop: TableMapping) -> None:
    """Carts (the last one's total does not fit a numeric column), an order, a customer."""
    records = []
    for n, key in enumerate(CARTS):
        item = image(key, "cart", f"cart{n}")
        item["total"] = "lots" if n == len(CARTS) - 1 else n
        records.append(record("INSERT", key, US + n, eid=f"cart{n}", item=item))
    order = ("CUSTOMER#2", "ORDER#2024-05-02#77")
    records.append(record("INSERT", order, US, eid="order", item=image(order, "order", "o")))
    customer = ("CUSTOMER#2", "PROFILE")
    records.append(record("INSERT", customer, US, eid="c", item=image(customer, "thing", "c")))
    pipeline = Pipeline(engine=engine, mappings=[shop])
    assert pipeline.process([SourceRecord(r) for r in records]).dead_lettered == 0
    pipeline.close()


def rows(engine: sa.Engine, query: str) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text(query)).all())


def test_a_new_route_takes_its_items_from_the_catch_all(engine: sa.Engine) -> None:
    shop = mapping(document())
    assert "shop_customers" in migrate(engine, [shop]).created
    load(engine, shop)
    assert rows(engine, "SELECT count(*) FROM shop_unmatched") == [(5,)]
    again = migrate(engine, [shop])
    assert "matches its tables" in format_plan(again) and not again.created

    grown = document()
    grown["routes"].append(CARTS_ROUTE)
    bigger = mapping(grown)
    result = migrate(engine, [bigger])
    assert result.created == ["shop_carts"]
    assert "fill route(s) shop_carts from shop_unmatched" in format_plan(result)
    (report,) = [r for r in result.backfills if r.table == "shop"]
    assert report.finished and report.filled == 4 and report.dead_lettered == 1
    carts = rows(engine, "SELECT cart_id, total FROM shop_carts ORDER BY cart_id")
    assert carts == [(1, 0), (2, 1), (3, 2), (4, 3)]
    assert rows(engine, "SELECT sk FROM shop_unmatched") == [("ORDER#2024-05-01#5",)]
    routes = rows(
        engine, "SELECT _ddbcdc_route, count(*) FROM ddbcdc_versions__shop GROUP BY 1 ORDER BY 1"
    )
    assert routes == [
        ("shop_carts", 4),
        ("shop_customers", 1),
        ("shop_orders", 1),
        ("shop_unmatched", 1),
    ]
    with engine.connect() as conn:
        (letter,) = list_dead_letters(conn)
    assert letter.stage == "backfill" and letter.target_table == "shop_carts"
    assert letter.error_column == "total" and b"lots" not in letter.payload
    assert orjson.loads(letter.payload)["route"] == "shop_carts"

    # the item changes by hand to fit; a replay moves it
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE shop_unmatched SET item = jsonb_set(item, '{total}', '9')"))
    assert replay_backfill(engine, [bigger], [letter]) == 0
    assert rows(engine, "SELECT count(*) FROM shop_unmatched") == [(0,)]
    assert rows(engine, "SELECT total FROM shop_carts WHERE cart_id = 5") == [(9,)]
    # the stream goes on: a cart's REMOVE (keys only) finds it in its new table
    pipeline = Pipeline(engine=engine, mappings=[bigger])
    pipeline.process([SourceRecord(record("REMOVE", CARTS[0], US + 99, eid="rm"))])
    pipeline.close()
    assert rows(engine, "SELECT count(*) FROM shop_carts") == [(4,)]


def test_a_removed_route_is_destructive(engine: sa.Engine) -> None:
    shop = mapping(document())
    migrate(engine, [shop])
    load(engine, shop)
    fewer = document()
    fewer["routes"] = [r for r in fewer["routes"] if r["target_table"] != "shop_orders"]
    with pytest.raises(ConfigurationError, match="drop table shop_orders"):
        migrate(engine, [mapping(fewer)])
    assert rows(engine, "SELECT count(*) FROM shop_orders") == [(1,)]
    done = migrate(engine, [mapping(fewer)], allow_destructive=True)
    assert "clear route ddbcdc_versions__shop shop_orders" in format_plan(done)
    with engine.connect() as conn:
        assert not sa.inspect(conn).has_table("shop_orders")
    assert rows(
        engine, "SELECT count(*) FROM ddbcdc_versions__shop WHERE _ddbcdc_route = 'shop_orders'"
    ) == [(0,)]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda d: d["routes"].reverse(), "routes reordered"),
        (lambda d: d["routes"].insert(0, CARTS_ROUTE), "added before route"),
        (
            lambda d: d["routes"][0]["match"].update(SK="PROFILE#MAIN"),
            "route 'shop_customers': match",
        ),
        (
            lambda d: d["key"][1].update(name="sort_key"),
            "DynamoDB key",
        ),
    ],
)
def test_route_changes_that_are_no_migration(
    engine: sa.Engine, change: Callable[[dict[str, Any]], Any], words: str
) -> None:
    migrate(engine, [mapping(document())])
    doc = document()
    change(doc)
    with pytest.raises(ConfigurationError, match=words) as caught:
        migrate(engine, [mapping(doc)])
    assert "not a migration" in str(caught.value)


def test_a_column_added_to_a_route_is_filled_and_its_dead_letters_replay(
    engine: sa.Engine,
) -> None:
    """A route's table gets a column like a plain table, filled from its kept attributes;
    a value that does not fit is a dead letter of the route's table, which a replay fills."""
    shop = mapping(document())
    migrate(engine, [shop])
    customers = [("CUSTOMER#1", "PROFILE"), ("CUSTOMER#2", "PROFILE")]
    records = []
    for n, (key, tier) in enumerate(zip(customers, [3, "gold"], strict=True)):
        item = image(key, "thing", f"c{n}") | {"tier": tier}
        records.append(record("INSERT", key, US + n, eid=f"c{n}", item=item))
    pipeline = Pipeline(engine=engine, mappings=[shop])
    assert pipeline.process([SourceRecord(r) for r in records]).dead_lettered == 0
    pipeline.close()

    grown = document()
    grown["routes"][0]["columns"].append({"name": "tier", "type": "integer"})
    bigger = mapping(grown)
    result = migrate(engine, [bigger])
    (report,) = [r for r in result.backfills if r.table == "shop_customers"]
    assert report.finished and report.filled == 1 and report.dead_lettered == 1
    assert rows(engine, "SELECT customer_id, tier FROM shop_customers ORDER BY 1") == [
        (1, 3),
        (2, None),
    ]
    with engine.connect() as conn:
        (letter,) = list_dead_letters(conn)
    assert letter.target_table == "shop_customers" and letter.error_column == "tier"

    with engine.begin() as conn:  # the kept attribute fixed by hand; a replay fills it
        conn.execute(
            sa.text(
                "UPDATE shop_customers SET attributes = jsonb_set(attributes, '{tier}', '7') "
                "WHERE customer_id = 2"
            )
        )
    assert replay_backfill(engine, [bigger], [letter]) == 0
    assert rows(engine, "SELECT tier FROM shop_customers WHERE customer_id = 2") == [(7,)]


def test_a_route_column_fill_locks_the_dynamodb_keys_versions_rows_first(
    engine: sa.Engine,
) -> None:
    """A route's column fill takes its rows' versions rows (one per DynamoDB key, in the
    routed mapping's versions table) before the rows, as every writer does: held by another
    session, the fill waits for it."""
    shop = mapping(document())
    migrate(engine, [shop])
    records = [
        record("INSERT", (f"CUSTOMER#{n}", "PROFILE"), US + n, eid=f"c{n}",
               item=image((f"CUSTOMER#{n}", "PROFILE"), "thing", f"c{n}") | {"tier": n})
        for n in (1, 2)
    ]  # fmt: skip
    pipeline = Pipeline(engine=engine, mappings=[shop])
    assert pipeline.process([SourceRecord(r) for r in records]).dead_lettered == 0
    pipeline.close()
    grown = document()
    grown["routes"][0]["columns"].append({"name": "tier", "type": "integer"})
    bigger = mapping(grown)
    migrate(engine, [bigger])  # adds tier and fills it; the fill's batch again, locked:
    route = bigger.routes[0].mapping
    filler = Filler(route, ["tier"], "attributes", routed=bigger)
    with engine.connect() as third, engine.connect() as conn:
        third.execute(
            sa.text("SELECT 1 FROM ddbcdc_versions__shop WHERE pk = 'CUSTOMER#2' FOR UPDATE")
        )
        conn.execute(sa.text("SET lock_timeout = '200ms'"))
        with pytest.raises(sa.exc.OperationalError) as raised:
            filler.lock(conn, None, 100)
        assert isinstance(raised.value.orig, psycopg.errors.LockNotAvailable)
        conn.rollback()
        third.rollback()
        rows = filler.lock(conn, None, 100)
    assert [r.customer_id for r in rows] == [1, 2]
