"""The single-table model of the load generator: customers, orders and order lines in one
table (``ddbcdc load --model single-table``), the shipped ``shop`` routed mapping's source.

Every item's key is one of a fixed universe, numbered from 1 (the operation's ``key``; its
DynamoDB key in ``keys``), ``keys`` customers each with two orders of two lines:

- ``PK = CUSTOMER#<c>``, ``SK = PROFILE``: a customer (``name``, ``email``, ``_et = customer``);
- ``PK = CUSTOMER#<c>``, ``SK = ORDER#<date>#<o>``: an order (``_et = order``) or a cart
  (``_et = cart``: unmatched, the catch-all keeps it), ``status``, ``total``;
- ``PK = ORDER#<o>``, ``SK = LINE#<n>``: an order line (``sku``, ``quantity``, ``price``).

insert puts an absent key of the universe (a removed one included: delete-then-reinsert),
modify rewrites a present item, and a cart becomes an order or an order a cart in about a
third of an order's modifies (an **entity change**: its row moves between tables); remove
deletes one. Entities arrive in any order: a line may come before its order, an order before
its customer (no foreign key holds between the tables). Pure and reproducible from the seed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from ddbcdc.load.ops import OPS, KeySpace, Operation, OpKind, choose_kind

__all__ = ["SHOP_KEY", "plan_shop", "shop_key", "shop_key_index"]

#: The key attributes of the single-table design.
SHOP_KEY = ("PK", "SK")
_ORDERS, _LINES = 2, 2
_PER_CUSTOMER = 1 + _ORDERS + _ORDERS * _LINES
_DAY0 = date(2024, 1, 1)
_NAMES = ("Ada", "Alan", "Barbara", "Edsger", "Grace", "Ken", "Leslie", "Radia", "Shafi")
_SKUS = ("book", "lamp", "mug", "pen", "tea")


def shop_key(index: int) -> tuple[str, str, str]:
    """(PK, SK, entity kind) of key ``index`` (1-based) of the universe."""
    customer, part = divmod(index - 1, _PER_CUSTOMER)
    customer += 1
    if part == 0:
        return f"CUSTOMER#{customer}", "PROFILE", "customer"
    part -= 1
    if part < _ORDERS:
        order = customer * 10 + part
        day = _DAY0 + timedelta(days=(customer * 7 + part) % 365)
        return f"CUSTOMER#{customer}", f"ORDER#{day.isoformat()}#{order}", "order"
    order = customer * 10 + (part - _ORDERS) // _LINES
    return f"ORDER#{order}", f"LINE#{(part - _ORDERS) % _LINES + 1}", "line"


def shop_key_index(keys: int) -> dict[tuple[str, str], int]:
    """(PK, SK) -> index, over a universe of ``keys`` customers."""
    return {shop_key(i)[:2]: i for i in range(1, keys * _PER_CUSTOMER + 1)}


def _item(rng: random.Random, index: int, entity: str | None = None) -> dict[str, Any]:
    pk, sk, kind = shop_key(index)
    item: dict[str, Any] = {"PK": pk, "SK": sk}
    if kind == "customer":
        name = rng.choice(_NAMES)
        item.update(_et="customer", name=name, email=f"{name.lower()}{index}@example.com")
    elif kind == "order":
        item["_et"] = entity or rng.choice(("order", "order", "cart"))
        item["status"] = rng.choice(("new", "paid", "shipped"))
        item["total"] = Decimal(rng.randrange(100, 100_000)) / 100
    else:
        item.update(_et="line", sku=rng.choice(_SKUS), quantity=rng.randint(1, 5))
        item["price"] = Decimal(rng.randrange(100, 5_000)) / 100
    return item


def _modified(rng: random.Random, index: int, item: Mapping[str, Any]) -> dict[str, Any]:
    entity = item.get("_et")
    if entity in ("order", "cart") and rng.random() < 1 / 3:
        entity = "cart" if entity == "order" else "order"  # an entity change
    new = {**_item(rng, index, entity if entity in ("order", "cart") else None)}
    return new


def plan_shop(
    *,
    count: int,
    keys: int,
    mix: Mapping[OpKind, int],
    seed: int,
    existing: Mapping[int, Mapping[str, Any]] | None = None,
) -> Iterator[Operation]:
    """The operations of a single-table load run (see the module doc): ``count`` writes over
    ``keys`` customers with their orders and lines."""
    rng = random.Random(seed)
    items: dict[int, Mapping[str, Any]] = dict(existing or {})
    space = KeySpace(keys * _PER_CUSTOMER, sorted(items))
    kinds = [op for op in OPS if mix.get(op, 0) > 0]
    weights = [mix[op] for op in kinds]
    for index in range(count):
        kind = choose_kind(rng, space, kinds, weights)
        if kind == "insert":
            key = space.pick_absent(rng)
            items[key] = item = _item(rng, key)
            space.inserted(key)
        elif kind == "modify":
            key = space.pick_present(rng)
            items[key] = item = _modified(rng, key, items[key])
        else:
            key = space.pick_present(rng)
            space.removed(key)
            del items[key]
            pk, sk, _ = shop_key(key)
            yield Operation(index, "remove", key, None, keys={"PK": pk, "SK": sk})
            continue
        changed = tuple(sorted(n for n in item if n not in SHOP_KEY)) if kind == "modify" else ()
        yield Operation(index, kind, key, item, changed, keys={"PK": item["PK"], "SK": item["SK"]})
