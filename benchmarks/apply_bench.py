"""`ddbcdc apply FILE` timed from outside, against other code in the same run.

Writes CHANGES Kinesis-format change records of the customers shape over KEYS keys
(``materialize_bench.generate``: per key an INSERT, then MODIFYs and REMOVEs, a REMOVE
followed by a re-INSERT), then, ROUNDS times, runs each contender on a fresh database of one
durable PostgreSQL and times the whole command (start-up included), contenders interleaved
round after round so machine noise hits them alike. Every contender must end with the same
live rows.

Contenders:

- ``ddbcdc``: this checkout's ``ddbcdc apply FILE --batch-size B``;
- ``floor``: ``benchmarks/apply_floor.py``, the least work that materializes the file (orjson
  per line, newest change per key, COPY into a staging table, one guarded upsert, delete and
  tombstone upsert per batch; with the change log, a COPY of every change into it too);
- ``baseline`` (``--baseline SRC``): the same command run from another checkout's ``src``
  (its C speedups built in place), e.g. the code before a change, on a database migrated by
  that checkout's own ``ddbcdc migrate``.

``--change-log off`` runs the customers mapping without its change log; ``--kept off``
without its kept-attributes column (the columns the floor writes). ``--soft`` adds the
contender ``soft``: this checkout with the mapping's ``"deletes": "soft"`` (its live items,
the rows not marked deleted, must equal the others' rows); ``--old-images``: REMOVEs carry the
item's last image, as Kinesis Data Streams for DynamoDB sends them (the image a soft delete
keeps).

    .venv/bin/python benchmarks/apply_bench.py [--changes 200000] [--keys 20000] \\
        [--rounds 3] [--change-log on|off] [--baseline ../old/src]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ddbcdc.local.postgres import TemporaryPostgres
from materialize_bench import generate

ROOT = Path(__file__).resolve().parents[1]
DDBCDC = [sys.executable, "-m", "ddbcdc.cli"]


def _mappings(
    folder: Path, change_log: bool, checkout: Path = ROOT, *, kept: bool = True, soft: bool = False
) -> Path:
    """The checkout's shipped customers mapping, with the change log on or off, without its
    kept-attributes column when ``kept`` is false (the floor keeps none), with soft deletes
    when ``soft``."""
    doc = json.loads((checkout / "schemas" / "tables" / "customers.json").read_text())
    doc["change_log"] = change_log
    if not kept:
        doc.pop("extra", None)
    if soft:
        doc["deletes"] = "soft"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "customers.json").write_text(json.dumps(doc))
    return folder


def _database(admin: sa.Engine, url: str) -> str:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    return sa.make_url(url).set(database=name).render_as_string(hide_password=False)


def _drop(admin: sa.Engine, db: str) -> None:
    name = sa.make_url(db).database
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))


def _live(db: str) -> list[Any]:
    """The live items (a soft-deleted row is none)."""
    engine = sa.create_engine(db)
    with engine.connect() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns("customers")}
        where = "WHERE _ddbcdc_deleted_at IS NULL" if "_ddbcdc_deleted_at" in columns else ""
        rows = conn.execute(
            sa.text(
                f"SELECT userid, trim(first_name), last_name, phone FROM customers {where} "
                "ORDER BY 1"
            )
        ).all()
    engine.dispose()
    return [tuple(r) for r in rows]


class Contender:
    """One way of running ``ddbcdc apply`` (a source tree on PYTHONPATH, or this one)."""

    def __init__(self, name: str, src: Path | None, mappings: Path, change_log: bool) -> None:
        self.name = name
        self.src = src
        self.mappings = mappings
        self.change_log = change_log
        self.seconds: list[float] = []
        self.cpu: list[float] = []  # the command's CPU seconds (not PostgreSQL's)

    def _env(self, db: str) -> dict[str, str]:
        env = {**os.environ, "DATABASE_URL": db, "DDBCDC_MAPPINGS_DIR": str(self.mappings)}
        if self.src is not None:
            env["PYTHONPATH"] = str(self.src)
        return env

    def command(self, data: Path, batch_size: int) -> list[str]:
        return [*DDBCDC, "apply", str(data), "--batch-size", str(batch_size), "--json"]

    def prepare(self, env: dict[str, str], cwd: str) -> None:
        subprocess.run([*DDBCDC, "migrate"], env=env, cwd=cwd, check=True, capture_output=True)

    def run(self, db: str, data: Path, batch_size: int) -> float:
        cwd = str(self.src.parent if self.src is not None else ROOT)
        env = self._env(db)
        self.prepare(env, cwd)
        command = self.command(data, batch_size)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        if done.returncode not in (0, 1):
            raise SystemExit(f"{self.name} failed: {done.stderr[-2000:]}")
        self.seconds.append(elapsed)
        return elapsed


class Floor(Contender):
    """``benchmarks/apply_floor.py``: creates its own tables, no migration."""

    def command(self, data: Path, batch_size: int) -> list[str]:
        floor = str(Path(__file__).resolve().parent / "apply_floor.py")
        extra = ["--change-log"] if self.change_log else []
        return [sys.executable, floor, str(data), "--batch-size", str(batch_size), *extra]

    def prepare(self, env: dict[str, str], cwd: str) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=200_000)
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--change-log", choices=["on", "off"], default="on")
    parser.add_argument(
        "--kept",
        choices=["on", "off"],
        default="on",
        help="the shipped mapping's kept-attributes column (off: the floor's columns)",
    )
    parser.add_argument("--baseline", type=Path, help="another checkout's src/ to compare with")
    parser.add_argument("--soft", action="store_true", help="add this checkout, soft deletes")
    parser.add_argument("--old-images", action="store_true", help="REMOVEs carry their OldImage")
    args = parser.parse_args()
    # Every contender starts from bytecode, as an installed package does (pip compiles it):
    # without it each run would compile ddbcdc's modules first (~60 ms).
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    sources = [ROOT / "src", ROOT / "benchmarks"]
    if args.baseline is not None:
        sources.append(args.baseline)
    subprocess.run([sys.executable, "-m", "compileall", "-q", *map(str, sources)], check=True)
    work = Path(tempfile.mkdtemp(prefix="ddbcdc-apply-bench-"))
    data = work / "changes.jsonl"
    data.write_bytes(generate(args.changes, args.keys, old_images=args.old_images))
    mappings = _mappings(work / "mappings", args.change_log == "on", kept=args.kept == "on")
    logged = args.change_log == "on"
    contenders = [
        Contender("ddbcdc", None, mappings, logged),
        Floor("floor", None, mappings, logged),
    ]
    if args.baseline is not None:
        src = args.baseline.resolve()
        theirs = _mappings(work / "baseline-mappings", logged, src.parent)
        contenders.append(Contender("baseline", src, theirs, logged))
    if args.soft:
        soft = _mappings(work / "soft-mappings", logged, kept=args.kept == "on", soft=True)
        contenders.append(Contender("soft", None, soft, logged))
    url = os.environ.get("DATABASE_URL")
    server = None if url else TemporaryPostgres(durable=True).start()
    url = url or server.url  # type: ignore[union-attr]
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    states: dict[str, list[Any]] = {}
    try:
        for round_ in range(args.rounds):
            order = contenders[round_ % len(contenders) :] + contenders[: round_ % len(contenders)]
            for contender in order:
                db = _database(admin, url)
                try:
                    seconds = contender.run(db, data, args.batch_size)
                    states[contender.name] = _live(db)
                finally:
                    _drop(admin, db)
                rate = args.changes / seconds
                print(
                    f"round {round_}: {contender.name:<9} {seconds:6.2f}s {rate:9,.0f}/s"
                    f"  cpu {contender.cpu[-1]:5.2f}s  load {os.getloadavg()[0]:.1f}"
                )
    finally:
        admin.dispose()
        if server is not None:
            server.stop()
    first = next(iter(states.values()))
    assert all(s == first for s in states.values()), "contenders disagree on the live rows"
    report = {
        "changes": args.changes,
        "keys": args.keys,
        "batch_size": args.batch_size,
        "change_log": args.change_log,
        "kept_attributes": args.kept,
        "live_rows": len(first),
        "durable": (url is not None and server is not None) or None,
    }
    best = {c.name: args.changes / min(c.seconds) for c in contenders}
    median = {c.name: args.changes / statistics.median(c.seconds) for c in contenders}
    for c in contenders:
        report[f"{c.name}_best_per_s"] = round(best[c.name])
        report[f"{c.name}_median_per_s"] = round(median[c.name])
        report[f"{c.name}_median_cpu_s"] = round(statistics.median(c.cpu), 2)
    report["ddbcdc_vs_floor_median"] = round(median["ddbcdc"] / median["floor"], 2)
    if args.baseline is not None:
        report["ddbcdc_vs_baseline_median"] = round(median["ddbcdc"] / median["baseline"], 2)
    if args.soft:
        report["soft_vs_ddbcdc_median"] = round(median["soft"] / median["ddbcdc"], 2)
    report["load_average"] = os.getloadavg()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
