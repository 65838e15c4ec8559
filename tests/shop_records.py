"""Change records of the single-table ``shop`` design, and what each route's table must hold.

The keys and what routes them (``schemas/single_table/shop.json``), written down here by
hand rather than computed by the code under test:

- ``CUSTOMER#<n>`` / ``PROFILE``: a customer (``shop_customers``, customer_id n);
- ``CUSTOMER#<n>`` / ``ORDER#<date>#<id>``: an order when ``_et`` is ``order``
  (``shop_orders``), else (a cart) unmatched (``shop_unmatched``);
- ``ORDER#<id>`` / ``LINE#<n>``: an order line (``shop_order_lines``);
- anything else (``CUSTOMER#01``: not customer 1) is unmatched.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from ddbcdc.decode.attributes import marshal
from ddbcdc.schema.mapping import TableMapping, parse_mapping

ROOT = Path(__file__).resolve().parents[1]
SHOP_FILE = ROOT / "schemas" / "single_table" / "shop.json"
SHOP_TABLES = ("shop_customers", "shop_orders", "shop_order_lines", "shop_unmatched")

#: (PK, SK) of the keys the histories use, and how each is routed.
KEYS: tuple[tuple[str, str], ...] = (
    ("CUSTOMER#1", "PROFILE"),
    ("CUSTOMER#2", "PROFILE"),
    ("CUSTOMER#1", "ORDER#2024-05-01#10"),
    ("CUSTOMER#2", "ORDER#2024-06-30#11"),
    ("ORDER#10", "LINE#1"),
    ("ORDER#10", "LINE#2"),
    ("CUSTOMER#01", "PROFILE"),
)
ORDER_KEYS = frozenset(k for k in KEYS if k[1].startswith("ORDER#"))


def shop_mapping(*, logged: bool = False) -> TableMapping:
    """The shipped shop mapping; ``logged``: every route (the catch-all too) keeps a log."""
    doc: dict[str, Any] = json.loads(SHOP_FILE.read_text())
    if logged:
        for route in doc["routes"]:
            route["change_log"] = True
        doc["unmatched"]["change_log"] = True
    return parse_mapping(doc, name="shop")


def route_of(key: tuple[str, str], entity: str | None) -> str:
    """The table an item of ``key`` with ``_et`` ``entity`` belongs to."""
    if key in ORDER_KEYS:
        return "shop_orders" if entity == "order" else "shop_unmatched"
    if key[0] == "CUSTOMER#01":
        return "shop_unmatched"
    return "shop_order_lines" if key[0].startswith("ORDER#") else "shop_customers"


def row_key(key: tuple[str, str], table: str) -> tuple[Any, ...]:
    """The key of ``key``'s row in ``table``."""
    pk, sk = key
    if table == "shop_customers":
        return (int(pk.split("#")[1]),)
    if table == "shop_orders":
        _, day, order = sk.split("#")
        return (int(pk.split("#")[1]), date.fromisoformat(day), int(order))
    if table == "shop_order_lines":
        return (int(pk.split("#")[1]), int(sk.split("#")[1]))
    return key


#: The column each table's rows carry the history's value in (``name`` attribute).
VALUE_COLUMN = {
    "shop_customers": "name",
    "shop_orders": "status",
    "shop_order_lines": "sku",
}


def image(key: tuple[str, str], entity: str, value: str) -> dict[str, Any]:
    """A NewImage of ``key`` (Python values)."""
    item: dict[str, Any] = {"PK": key[0], "SK": key[1], "_et": entity}
    item.update({"name": value, "status": value, "sku": value})
    return item


def record(
    event: str,
    key: tuple[str, str],
    us: int,
    *,
    eid: str,
    item: dict[str, Any] | None = None,
    sequence: str | None = None,
) -> bytes:
    """One change record of the ``shop`` table (Kinesis Data Streams for DynamoDB JSON)."""
    body: dict[str, Any] = {
        "ApproximateCreationDateTime": us,
        "Keys": marshal({"PK": key[0], "SK": key[1]}),
    }
    if event != "REMOVE":
        body["NewImage"] = marshal(item or {})
    if sequence is not None:
        body["SequenceNumber"] = sequence
    doc = {"eventID": eid, "eventName": event, "tableName": "shop", "dynamodb": body}
    return orjson.dumps(doc)


@dataclass
class ShopHistory:
    """Records in the order they happened and the state each table must end in.

    ``final``: per live key, (entity, value); ``deleted``: keys whose last change is a REMOVE.
    """

    records: list[bytes] = field(default_factory=list)
    final: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    deleted: set[tuple[str, str]] = field(default_factory=set)

    def expected(self) -> dict[str, dict[tuple[Any, ...], str]]:
        """Per table, row key -> value (the catch-all: the item's ``name``)."""
        out: dict[str, dict[tuple[Any, ...], str]] = {t: {} for t in SHOP_TABLES}
        for key, (entity, value) in self.final.items():
            table = route_of(key, entity)
            out[table][row_key(key, table)] = value
        return out

    def routes(self) -> dict[tuple[str, str], str | None]:
        """Per key ever written, the route its versions row must name (None: deleted)."""
        found: dict[tuple[str, str], str | None] = dict.fromkeys(self.deleted)
        found.update({k: route_of(k, e) for k, (e, _) in self.final.items()})
        return found


def generate(
    rng: random.Random,
    *,
    steps: int,
    start_us: int,
    keys: Sequence[tuple[str, str]] = KEYS,
    prefix: str = "h",
    sequence: bool = False,
) -> ShopHistory:
    """A random valid history: inserts, modifies that flip orders and carts, removes and
    reinserts, many changes in the same microsecond; event ids sort in history order."""
    history = ShopHistory()
    alive: dict[tuple[str, str], bool] = dict.fromkeys(keys, False)
    us = start_us
    for serial in range(steps):
        us += rng.choice((0, 0, 1, 7, 1_000))
        key = rng.choice(list(keys))
        remove = alive[key] and rng.random() < 0.3
        event = "REMOVE" if remove else ("MODIFY" if alive[key] else "INSERT")
        entity = rng.choice(("order", "cart")) if key in ORDER_KEYS else "thing"
        value = f"{prefix}{serial}"
        item = None if remove else image(key, entity, value)
        seq = str(1000 + serial) if sequence else None
        eid = f"{prefix}-{serial:08d}"
        history.records.append(record(event, key, us, eid=eid, item=item, sequence=seq))
        alive[key] = not remove
        if remove:
            history.final.pop(key, None)
            history.deleted.add(key)
        else:
            history.final[key] = (entity, value)
            history.deleted.discard(key)
    return history


def table_state(conn: sa.Connection) -> dict[str, dict[tuple[Any, ...], str]]:
    """What each shop table holds, as :meth:`ShopHistory.expected` says it."""
    out: dict[str, dict[tuple[Any, ...], str]] = {}
    keys = {
        "shop_customers": "customer_id",
        "shop_orders": "customer_id, order_date, order_id",
        "shop_order_lines": "order_id, line_no",
    }
    for table, column in VALUE_COLUMN.items():
        query = f"SELECT {keys[table]}, {column} FROM {table}"
        out[table] = {tuple(r[:-1]): r[-1] for r in conn.execute(sa.text(query))}
    rows = conn.execute(sa.text("SELECT pk, sk, item->>'name' FROM shop_unmatched"))
    out["shop_unmatched"] = {(r[0], r[1]): r[2] for r in rows}
    return out


def versions_state(conn: sa.Connection) -> dict[tuple[str, str], str | None]:
    """Per versions row of ``shop``, the route it names (None: deleted)."""
    rows = conn.execute(
        sa.text("SELECT pk, sk, _ddbcdc_deleted, _ddbcdc_route FROM ddbcdc_versions__shop")
    )
    found: dict[tuple[str, str], str | None] = {}
    for pk, sk, deleted, route in rows:
        assert deleted == (route is None), (pk, sk, deleted, route)
        found[(pk, sk)] = route
    return found


def logged_count(conn: sa.Connection) -> int:
    """Rows in every shop route's change log."""
    total = 0
    for table in SHOP_TABLES:
        name = f"ddbcdc_changes__{table}"
        if sa.inspect(conn).has_table(name):
            total += int(conn.execute(sa.text(f"SELECT count(*) FROM {name}")).scalar() or 0)
    return total
