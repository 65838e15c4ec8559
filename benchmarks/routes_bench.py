"""`ddbcdc apply FILE` of a single-table design: a routed mapping against a plain one, same run.

Writes CHANGES Kinesis-format change records of the ``shop`` single-table design (the load
generator's model, :mod:`ddbcdc.load.shop`: customers, orders and carts, order lines; entity
changes, delete-then-reinsert) over the keys of CUSTOMERS customers, then, ROUNDS times,
runs ``ddbcdc apply FILE --batch-size B`` under each mapping on a fresh database of one durable
PostgreSQL and times the whole command, the mappings interleaved round after round:

- ``plain``: the table into one PostgreSQL table (key pk, sk), a typed column for every
  attribute any entity has, the rest (``_et``) kept as jsonb: what a single-table design gets
  without routes;
- ``routed``: the shipped three-route ``shop`` mapping (customers, orders, order lines, and the
  catch-all keeping carts whole), without its change log as the plain one: a table per
  entity.

Both must end with as many live rows. The target: routed within 15% of plain (a ratio of the
medians of at least 0.85). ``--against SRC`` adds a third contender, ``routed-against``: the
routed mapping under another source tree (``SRC``: its ``src`` folder, e.g. of a ``git
worktree`` of the commit to compare with), interleaved with the other two.

    .venv/bin/python benchmarks/routes_bench.py [--changes 200000] [--customers 3000] \\
        [--batch-size 5000] [--rounds 5] [--against ../other/src]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from apply_bench import ROOT, Contender, _database, _drop
from ddbcdc.decode.attributes import marshal
from ddbcdc.load.plan import LoadOptions, plan_operations
from ddbcdc.local.postgres import TemporaryPostgres

BASE_US = 1_700_000_000_000_000
PLAIN = {
    "source_table": "shop",
    "target_table": "shop_items",
    "key": ["pk", "sk"],
    "extra": {"column": "attributes"},
    "columns": [
        {"name": "pk", "source": "PK", "type": "text"},
        {"name": "sk", "source": "SK", "type": "text"},
        {"name": "name", "type": "text", "rules": ["trim"]},
        {"name": "email", "type": "text", "rules": ["trim", "lowercase"]},
        {"name": "status", "type": "text"},
        {"name": "total", "type": "numeric"},
        {"name": "sku", "type": "text"},
        {"name": "quantity", "type": "integer"},
        {"name": "price", "type": "numeric"},
    ],
}


def generate(changes: int, customers: int, seed: int = 7) -> bytes:
    """The load generator's single-table operations as change records, in version order."""
    options = LoadOptions(
        table="shop",
        count=changes,
        keys=customers,
        mix={"insert": 40, "modify": 45, "remove": 15},
        seed=seed,
        model="single-table",
    )
    lines = []
    for op in plan_operations(options):
        event = {"insert": "INSERT", "modify": "MODIFY", "remove": "REMOVE"}[op.kind]
        assert op.keys is not None
        body: dict[str, Any] = {
            "ApproximateCreationDateTime": BASE_US + op.index * 10,
            "Keys": marshal(dict(op.keys)),
            "SequenceNumber": str(10**20 + op.index),
        }
        if op.item is not None:
            body["NewImage"] = marshal(dict(op.item))
        doc = {"eventID": f"e{op.index:09d}", "eventName": event, "tableName": "shop"}
        lines.append(orjson.dumps({**doc, "dynamodb": body}))
    return b"\n".join(lines) + b"\n"


def _folder(work: Path, name: str, document: dict[str, Any]) -> Path:
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "shop.json").write_text(json.dumps(document))
    return folder


def _rows(db: str, tables: list[str]) -> int:
    engine = sa.create_engine(db)
    with engine.connect() as conn:
        total = sum(
            int(conn.execute(sa.select(sa.func.count()).select_from(sa.table(t))).scalar() or 0)
            for t in tables
        )
    engine.dispose()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=200_000)
    parser.add_argument("--customers", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--against", type=Path, help="another source tree's src folder")
    args = parser.parse_args()
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    compile_ = [sys.executable, "-m", "compileall", "-q", str(ROOT / "src")]
    subprocess.run(compile_, check=True)
    if args.against is not None:
        subprocess.run([*compile_[:-1], str(args.against)], check=True)
    work = Path(tempfile.mkdtemp(prefix="ddbcdc-routes-bench-"))
    data = work / "changes.jsonl"
    data.write_bytes(generate(args.changes, args.customers))
    routed_doc = json.loads((ROOT / "schemas" / "single_table" / "shop.json").read_text())
    for route in routed_doc["routes"]:
        route["change_log"] = False  # as the plain mapping: no change log
    contenders = {
        "plain": (Contender("plain", None, _folder(work, "plain", PLAIN), False), ["shop_items"]),
        "routed": (
            Contender("routed", None, _folder(work, "routed", routed_doc), False),
            ["shop_customers", "shop_orders", "shop_order_lines", "shop_unmatched"],
        ),
    }
    if args.against is not None:
        folder = _folder(work, "routed-against", routed_doc)
        contender = Contender("routed-against", args.against.resolve(), folder, False)
        contenders["routed-against"] = (contender, contenders["routed"][1])
    url = os.environ.get("DATABASE_URL")
    server = None if url else TemporaryPostgres(durable=True).start()
    url = url or server.url  # type: ignore[union-attr]
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    rows: dict[str, int] = {}
    names = list(contenders)
    try:
        for round_ in range(args.rounds):
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                contender, tables = contenders[name]
                db = _database(admin, url)
                try:
                    seconds = contender.run(db, data, args.batch_size)
                    rows[name] = _rows(db, tables)
                finally:
                    _drop(admin, db)
                rate = args.changes / seconds
                print(f"round {round_}: {name:<14} {seconds:6.2f}s {rate:9,.0f}/s", flush=True)
    finally:
        admin.dispose()
        if server is not None:
            server.stop()
    assert len(set(rows.values())) == 1, f"live rows differ: {rows}"
    median = {n: args.changes / statistics.median(c.seconds) for n, (c, _) in contenders.items()}
    report = {
        "changes": args.changes,
        "customers": args.customers,
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "live_rows": rows["plain"],
        **{f"{n}_median_per_s": round(v) for n, v in median.items()},
        **{
            f"{n}_cpu_median_s": round(statistics.median(c.cpu), 2)
            for n, (c, _) in contenders.items()
        },
        **{f"{n}_vs_plain_median": round(median[n] / median["plain"], 3) for n in names[1:]},
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
