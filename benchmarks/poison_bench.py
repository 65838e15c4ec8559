"""`ddbcdc apply` of batches PostgreSQL partly refuses, against the same batches refused nowhere.

Writes CHANGES Kinesis-format change records of the customers shape over KEYS keys
(``materialize_bench.generate``: INSERTs, MODIFYs, REMOVEs), then a copy of that file per
poison share in which that share of the INSERTs and MODIFYs (chosen at random, seeded) has a
first name that a CHECK constraint on the live table refuses. ROUNDS times, each file is
applied by the real ``ddbcdc apply FILE --batch-size B`` on a fresh database of one durable
PostgreSQL (migrated by the contender's own ``ddbcdc migrate``, then the constraint added),
contenders interleaved round after round so machine noise hits them alike. Every contender
must end, per file, with the same live rows and the same dead letters.

Reported per contender and share: the whole command (start-up included) and the time it
says it spent applying, medians, and that time over the clean file's (the same code).

``--routed``: the same over the shipped routed ``shop`` mapping (a single-table design,
``routes_bench.generate``: customers, orders and carts that move between tables, order lines;
CUSTOMERS customers): the share is of all the changes, every one an order's INSERT or MODIFY
whose ``status`` a CHECK constraint on ``shop_orders`` refuses (a cart becoming such an order
must stay a cart); every table's rows and the dead letters must agree.

Contenders: ``ddbcdc`` (this checkout) and, with ``--baseline SRC``, the same command run
from another checkout's ``src`` (its C speedups built in place), e.g. the code before a
change; ``--baseline-poison`` limits the shares it runs (the isolation before took minutes
a batch), ``--timeout`` ends a run that takes longer (reported as such).

    .venv/bin/python benchmarks/poison_bench.py [--changes 50000] [--keys 10000] \\
        [--batch-size 5000] [--poison 0,2,10,50] [--rounds 3] \\
        [--baseline OTHER/src] [--baseline-poison 0,2] [--timeout 900] \\
        [--routed [--customers 1000]]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from apply_bench import _database, _drop, _mappings
from ddbcdc.local.postgres import TemporaryPostgres
from materialize_bench import generate
from routes_bench import _folder
from routes_bench import generate as generate_shop

ROOT = Path(__file__).resolve().parents[1]
DDBCDC = [sys.executable, "-m", "ddbcdc.cli"]
REFUSED = "POISON"
CONSTRAINT = f"ALTER TABLE customers ADD CONSTRAINT bench_poison CHECK (first_name <> '{REFUSED}')"
ROUTED_CONSTRAINT = (
    f"ALTER TABLE shop_orders ADD CONSTRAINT bench_poison CHECK (status <> '{REFUSED}')"
)
SHOP_TABLES = ("shop_customers", "shop_orders", "shop_order_lines", "shop_unmatched")


def poisoned(lines: list[bytes], percent: float, seed: int = 11) -> bytes:
    """``lines`` with ``percent`` of the INSERTs and MODIFYs given a refused first name."""
    rng = random.Random(seed)
    out = []
    for line in lines:
        record = orjson.loads(line)
        image = record["dynamodb"].get("NewImage")
        if image is not None and rng.random() * 100 < percent:
            image["first_name"] = {"S": REFUSED}
            line = orjson.dumps(record)
        out.append(line)
    return b"\n".join(out) + b"\n"


def poisoned_orders(lines: list[bytes], percent: float, seed: int = 11) -> bytes:
    """``lines`` (the shop design's) with ``percent`` of all of them, each an order's INSERT
    or MODIFY, given a refused status."""
    rng = random.Random(seed)
    orders = [
        i
        for i, line in enumerate(lines)
        if orjson.loads(line)["dynamodb"].get("NewImage", {}).get("_et") == {"S": "order"}
    ]
    chosen = set(rng.sample(orders, min(len(orders), round(len(lines) * percent / 100))))
    out = []
    for i, line in enumerate(lines):
        if i in chosen:
            record = orjson.loads(line)
            record["dynamodb"]["NewImage"]["status"] = {"S": REFUSED}
            line = orjson.dumps(record)
        out.append(line)
    return b"\n".join(out) + b"\n"


@dataclass(frozen=True)
class Shape:
    """What the bench applies: the records, how a share is refused, the constraint, the
    mappings (per checkout) and the state every contender must end with."""

    lines: list[bytes]
    poison: Any
    constraint: str
    mappings: Any
    state: Any


def _state(db: str) -> tuple[list[Any], list[Any]]:
    engine = sa.create_engine(db)
    with engine.connect() as conn:
        live = conn.execute(
            sa.text("SELECT userid, first_name, last_name, phone FROM customers ORDER BY 1")
        ).all()
        letters = conn.execute(
            sa.text("SELECT payload FROM ddbcdc_dead_letters ORDER BY payload")
        ).all()
    engine.dispose()
    return [tuple(r) for r in live], [bytes(r[0]) for r in letters]


def _routed_state(db: str) -> tuple[list[Any], list[Any]]:
    engine = sa.create_engine(db)
    with engine.connect() as conn:
        live = []
        for table in SHOP_TABLES:
            columns = [c["name"] for c in sa.inspect(conn).get_columns(table)]
            kept = [sa.column(c) for c in columns if c != "_ddbcdc_updated_at"]
            rows = conn.execute(sa.select(*kept).select_from(sa.table(table)).order_by(*kept))
            live += [(table, *r) for r in rows]
        letters = conn.execute(
            sa.text("SELECT payload FROM ddbcdc_dead_letters ORDER BY payload")
        ).all()
    engine.dispose()
    return [tuple(map(str, r)) for r in live], [bytes(r[0]) for r in letters]


def _routed_mappings(folder: Path, checkout: Path = ROOT) -> Path:
    doc = json.loads((checkout / "schemas" / "single_table" / "shop.json").read_text())
    return _folder(folder.parent, folder.name, doc)


def shape(args: argparse.Namespace) -> Shape:
    if args.routed:
        lines = generate_shop(args.changes, args.customers).splitlines()
        return Shape(lines, poisoned_orders, ROUTED_CONSTRAINT, _routed_mappings, _routed_state)
    lines = generate(args.changes, args.keys).splitlines()
    return Shape(lines, poisoned, CONSTRAINT, lambda f, c=ROOT: _mappings(f, True, c), _state)


class Contender:
    """``ddbcdc apply`` from a source tree (None: this checkout)."""

    def __init__(
        self, name: str, src: Path | None, mappings: Path, shares: list[float], constraint: str
    ) -> None:
        self.name = name
        self.constraint = constraint
        self.src = src
        self.mappings = mappings
        self.shares = shares
        self.wall: dict[float, list[float]] = {s: [] for s in shares}
        self.applying: dict[float, list[float]] = {s: [] for s in shares}
        self.timed_out: set[float] = set()

    def run(self, db: str, data: Path, share: float, batch_size: int, timeout: float) -> bool:
        cwd = str(self.src.parent if self.src is not None else ROOT)
        env = {**os.environ, "DATABASE_URL": db, "DDBCDC_MAPPINGS_DIR": str(self.mappings)}
        env["DDBCDC_LOG_LEVEL"] = "ERROR"
        if self.src is not None:
            env["PYTHONPATH"] = str(self.src)
        subprocess.run([*DDBCDC, "migrate"], env=env, cwd=cwd, check=True, capture_output=True)
        engine = sa.create_engine(db)
        with engine.begin() as conn:
            conn.execute(sa.text(self.constraint))
        engine.dispose()
        command = [*DDBCDC, "apply", str(data), "--batch-size", str(batch_size), "--json"]
        started = time.perf_counter()
        try:
            done = subprocess.run(
                command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            self.timed_out.add(share)
            return False
        wall = time.perf_counter() - started
        if done.returncode not in (0, 1):
            raise SystemExit(f"{self.name} failed: {done.stderr[-2000:]}")
        self.wall[share].append(wall)
        self.applying[share].append(json.loads(done.stdout)["seconds"])
        return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=50_000)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--poison", default="0,2,10,50", help="percentages, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="another checkout's src/ to compare with")
    parser.add_argument("--baseline-poison", help="the shares the baseline runs (default: all)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds a run may take")
    parser.add_argument("--routed", action="store_true", help="the routed shop mapping")
    parser.add_argument("--customers", type=int, default=1000, help="with --routed")
    args = parser.parse_args()
    shares = [float(x) for x in args.poison.split(",")]
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    sources = [ROOT / "src"] + ([args.baseline] if args.baseline else [])
    subprocess.run([sys.executable, "-m", "compileall", "-q", *map(str, sources)], check=True)
    work = Path(tempfile.mkdtemp(prefix="ddbcdc-poison-bench-"))
    bench = shape(args)
    files = {}
    for share in shares:
        files[share] = work / f"changes-{share:g}.jsonl"
        files[share].write_bytes(bench.poison(bench.lines, share))
    mappings = bench.mappings(work / "mappings")
    contenders = [Contender("ddbcdc", None, mappings, shares, bench.constraint)]
    if args.baseline is not None:
        src = args.baseline.resolve()
        theirs = bench.mappings(work / "baseline-mappings", src.parent)
        limited = args.baseline_poison
        mine = [float(x) for x in limited.split(",")] if limited else shares
        contenders.append(Contender("baseline", src, theirs, mine, bench.constraint))
    url = os.environ.get("DATABASE_URL")
    server = None if url else TemporaryPostgres(durable=True).start()
    url = url or server.url  # type: ignore[union-attr]
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    states: dict[float, dict[str, Any]] = {s: {} for s in shares}
    runs = [(c, s) for s in shares for c in contenders if s in c.shares]
    try:
        for round_ in range(args.rounds):
            shift = round_ % len(runs)
            for contender, share in runs[shift:] + runs[:shift]:
                if share in contender.timed_out:
                    continue
                db = _database(admin, url)
                try:
                    ok = contender.run(db, files[share], share, args.batch_size, args.timeout)
                    if ok:
                        states[share][contender.name] = bench.state(db)
                finally:
                    _drop(admin, db)
                seconds = contender.wall[share][-1] if ok else args.timeout
                print(f"round {round_}: {contender.name:<9} {share:>4g}% {seconds:7.2f}s"
                      f"{'' if ok else ' (timed out)'}", flush=True)  # fmt: skip
    finally:
        admin.dispose()
        if server is not None:
            server.stop()
    for share, found in states.items():
        first = next(iter(found.values()), None)
        assert all(s == first for s in found.values()), f"contenders disagree at {share:g}%"
    report: dict[str, Any] = {
        "changes": args.changes,
        "keys": args.keys,
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "dead_lettered": {
            f"{s:g}%": len(next(iter(f.values()))[1]) for s, f in states.items() if f
        },
    }
    for c in contenders:
        clean = statistics.median(c.applying[0.0]) if c.applying.get(0.0) else None
        for share in c.shares:
            key = f"{c.name} {share:g}%"
            if share in c.timed_out or not c.wall[share]:
                report[key] = f"over {args.timeout:g}s"
                continue
            applying = statistics.median(c.applying[share])
            entry = {
                "wall_s": round(statistics.median(c.wall[share]), 2),
                "applying_s": round(applying, 2),
            }
            if clean:
                entry["x_clean"] = round(applying / clean, 2)
            report[key] = entry
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
