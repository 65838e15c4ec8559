"""The demo's archive act: DynamoDB expires items, PostgreSQL keeps them.

The demo's customers mapping keeps what the table's Time to Live expires (``"ttl_deletes":
"keep"``; users' deletes still delete). With the worker running, the loader writes a few new
items with ``expires_at`` a few seconds ahead; the local stack's sweeper expires them as
DynamoDB does (REMOVEs by the TTL service). The act waits until DynamoDB holds none of them
and the worker has applied every expiry, then shows that PostgreSQL keeps each as it last
was (the REMOVE's cause ``ttl`` in the change log, a tombstone in the versions table) while
the copy of the live items still equals the table.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

import sqlalchemy as sa

from ddbcdc.load.plan import LoadOptions, plan_operations
from ddbcdc.load.writer import run_load
from ddbcdc.schema.mapping import TableMapping, mapping_document
from ddbcdc.schema.tables import mapped_tables
from ddbcdc.verify.compare import compare

__all__ = ["ITEMS", "TTL_ATTRIBUTE", "archive", "archiving_mapping"]

#: The attribute the table's Time to Live reads.
TTL_ATTRIBUTE = "expires_at"
#: Items the act writes to expire, and how long they live.
ITEMS, LIFETIME_S = 40, 3.0


def archiving_mapping(mapping: TableMapping, directory: Path) -> Path:
    """``mapping`` keeping what the TTL expires, written to ``directory``; the folder."""
    document = {**mapping_document(mapping), "ttl_deletes": "keep"}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{mapping.name}.json").write_text(json.dumps(document, indent=2) + "\n")
    return directory


def _archived(engine: sa.Engine, mapping: TableMapping, keys: list[int]) -> int:
    """How many of ``keys`` the worker has applied a TTL expiry of."""
    log = mapped_tables([mapping])[mapping.name].changes
    assert log is not None
    query = sa.select(sa.func.count(sa.distinct(log.c.userid))).where(
        log.c._ddbcdc_removed_by == "ttl", log.c.userid.in_(keys)
    )
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def _present(dynamodb: Any, table: str, keys: list[int]) -> int:
    items = dynamodb.scan(TableName=table, ConsistentRead=True, ProjectionExpression="userid")
    found = {int(item["userid"]["N"]) for item in items.get("Items", [])}
    return len(found & set(keys))


def archive(
    dynamodb: Any,
    engine: sa.Engine,
    mapping: TableMapping,
    existing: Mapping[int, Any],
    *,
    seed: int,
    timeout: float,
    say: Callable[[str], None],
    out: TextIO,
) -> int:
    """Write items that expire, wait for DynamoDB and PostgreSQL: 0 when kept as expected."""
    options = LoadOptions(
        table=mapping.source_table,
        count=ITEMS,
        keys=max(existing, default=0) + ITEMS,
        mix={"insert": 1},
        seed=seed,
        ttl_attribute=TTL_ATTRIBUTE,
        ttl_seconds=LIFETIME_S,
    )
    operations = list(plan_operations(options, existing=existing))
    keys = sorted(op.key for op in operations)
    say(f"writing {ITEMS} new items that expire in {LIFETIME_S:.0f} s ({TTL_ATTRIBUTE!r})")
    run_load(dynamodb, options, operations=operations)
    deadline = time.monotonic() + timeout
    while (
        _present(dynamodb, mapping.source_table, keys) or _archived(engine, mapping, keys) < ITEMS
    ):
        if time.monotonic() > deadline:
            print("\nMISMATCH: the expired items were not all archived in time", file=out)
            return 1
        time.sleep(0.5)
    say(f"DynamoDB expired all {ITEMS}; PostgreSQL applied {ITEMS} REMOVEs by the TTL service")
    comparison = compare(dynamodb, engine, mapping)
    live = mapped_tables([mapping])[mapping.name].live
    with engine.connect() as conn:
        kept = conn.execute(
            sa.select(live.c.userid, live.c.first_name, live.c.last_name)
            .where(live.c.userid.in_(keys))
            .order_by(live.c.userid)
        ).all()
    print(f"\nArchived: {len(kept)} rows kept after DynamoDB expired their items, e.g.", file=out)
    for row in kept[:3]:
        print(f"  PostgreSQL {dict(row._mapping)}   DynamoDB: expired", file=out)
    if len(kept) != ITEMS or not comparison.matches:
        print(f"\nMISMATCH after the expiries: {len(kept)} kept, {comparison}", file=out)
        return 1
    print("PostgreSQL still matches DynamoDB's live items, and keeps what expired.", file=out)
    return 0
