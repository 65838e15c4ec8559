"""The demo's single-table act: one DynamoDB table, a PostgreSQL table per entity, live.

The ``shop`` table holds customers, orders (and carts) and order lines, told apart by their
keys (``CUSTOMER#<c>`` / ``PROFILE``, ``CUSTOMER#<c>`` / ``ORDER#<date>#<o>``, ``ORDER#<o>`` /
``LINE#<n>``) and the ``_et`` attribute. The shipped routed mapping (``schemas/single_table``)
sends each entity to its table; carts match no route and are kept whole in the catch-all.
The worker that copies ``customers`` copies ``shop`` too (its records come through the same
stream). The load (:mod:`ddbcdc.load.shop`) inserts, modifies, removes and re-inserts items,
and turns carts into orders and back, each move between two tables in one transaction. The
act ends when every table equals the items of its entity (a Scan routed the same way).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TextIO

import sqlalchemy as sa

from ddbcdc.aws import clients as aws
from ddbcdc.decode.attributes import unmarshal
from ddbcdc.decode.render import to_jsonable
from ddbcdc.load.plan import LoadOptions, expected_state, plan_operations
from ddbcdc.load.writer import run_load
from ddbcdc.schema.mapping import TableMapping
from ddbcdc.settings import Settings
from ddbcdc.verify.compare import Comparison, compare_routes
from ddbcdc.verify.routed import ROUTE, rows_for

__all__ = ["single_table_act"]


def _samples(dynamodb: Any, engine: sa.Engine, mapping: TableMapping, out: TextIO) -> None:
    """One item of each table next to its row there."""
    rows = rows_for(mapping)
    first: dict[str, tuple[Any, dict[str, Any]]] = {}
    with engine.connect() as conn:
        for key, row in rows.live_rows(conn):
            first.setdefault(row[ROUTE], (key, row))
    names = [c.source for c in mapping.key_columns]
    for target in mapping.targets:
        if target not in first:
            continue
        key, row = first[target]
        item = dynamodb.get_item(
            TableName=mapping.source_table,
            Key={n: {"S": v} for n, v in zip(names, key, strict=True)},
        ).get("Item", {})
        shown = {k: v for k, v in row.items() if k != ROUTE}
        print(f"  {target}", file=out)
        print(f"    DynamoDB   {to_jsonable(unmarshal(item))}", file=out)
        print(f"    PostgreSQL {to_jsonable(shown)}", file=out)


def _wait(
    check: Callable[[], list[Comparison]], *, timeout: float, alive: Callable[[], bool]
) -> tuple[list[Comparison], float]:
    started = time.monotonic()
    while True:
        found = check()
        waited = time.monotonic() - started
        if all(c.matches for c in found) or waited > timeout or not alive():
            return found, waited
        time.sleep(0.5)


def single_table_act(
    settings: Settings,
    engine: sa.Engine,
    mapping: TableMapping,
    *,
    changes: int,
    customers: int,
    seed: int,
    timeout: float,
    alive: Callable[[], bool],
    say: Callable[[str], None],
    out: TextIO,
) -> int:
    """Load the single-table workload, wait until every table equals the items of its
    entity, report: 0 when they all match."""
    options = LoadOptions(
        table=mapping.source_table, count=changes, keys=customers, seed=seed, model="single-table"
    )
    operations = list(plan_operations(options))
    say(
        f"single table: loading {changes} changes into {mapping.source_table!r} (customers, "
        "orders, carts, order lines; carts becoming orders and back)"
    )
    summary = run_load(
        aws.client("dynamodb", settings, max_attempts=1), options, operations=operations
    )
    say(f"loaded {summary.total_writes} changes; waiting for the tables of every entity")
    dynamodb = aws.client("dynamodb", settings)
    found, waited = _wait(
        lambda: compare_routes(dynamodb, engine, mapping), timeout=timeout, alive=alive
    )
    expected = len(expected_state(operations))
    print(
        "\nddbcdc demo, single table: one DynamoDB table, a PostgreSQL table per entity", file=out
    )
    for comparison in found:
        state = "equal" if comparison.matches else "DIFFERENT"
        print(
            f"  {comparison.target_table:18} {comparison.target_rows:5} rows, "
            f"{comparison.source_items:5} items of its entity: {state}",
            file=out,
        )
    print(f"  caught up           {waited:.1f} s after the last write", file=out)
    items = sum(c.source_items for c in found)
    if all(c.matches for c in found) and items == expected:
        print("\nSample rows:", file=out)
        _samples(dynamodb, engine, mapping, out)
        print(
            "\nEvery table equals the items of its entity; the catch-all holds exactly the "
            "unmatched ones (the carts).",
            file=out,
        )
        return 0
    print(f"\nMISMATCH in the single-table act ({items} items, {expected} expected)", file=out)
    return 1
