"""Importing a full DynamoDB export from local files, timed from outside, with its memory.

For each size (``--items``, default 100,000 and 1,000,000 customers items), writes an export
folder as AWS lays it out (``export_data.py``: manifests, MD5s, ``data/*.json.gz`` of 250,000
items), then, ROUNDS times, runs each contender on a fresh database of one durable PostgreSQL
(fsync on) and times the whole command, contenders interleaved round after round:

- ``ddbcdc``: ``ddbcdc snapshot --from-export DIR --force`` (start-up, the checks of every
  file, every batch through the pipeline and committed); its peak RSS comes from ``wait4``;
- ``floor``: ``export_floor.py``, the least work that materializes the export (orjson per
  line, COPY, one guarded upsert of versions and live rows per batch).

Both must end with the same live rows. ``--parallel`` adds ``ddbcdc-2``: the same command with
``--parallel 2`` (two data files at once). ``--baseline SRC`` adds ``baseline`` (and
``baseline-2`` with ``--parallel``): the same command run from another checkout's ``src`` (its
C speedups built in place), e.g. the code before a change. ``--breakdown`` runs the import
once more in this process with the pipeline's two halves timed: ``prepare`` (decode, cleanse,
plan: the second thread) and ``apply`` (the transaction: COPY and statements), to tell what
bounds it.

    .venv/bin/python benchmarks/export_bench.py [--items 100000 1000000] [--rounds 3] \\
        [--batch-size 10000] [--breakdown] [--parallel] [--baseline ../old/src]
"""

from __future__ import annotations

import argparse
import json
import os
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
from export_data import write_export

ROOT = Path(__file__).resolve().parents[1]
DIGEST = (
    "SELECT count(*), md5(string_agg(concat_ws('|', userid, first_name, last_name, phone), ','"
    " ORDER BY userid)) FROM customers"
)


def _database(admin: sa.Engine, url: str) -> str:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    return sa.make_url(url).set(database=name).render_as_string(hide_password=False)


def _drop(admin: sa.Engine, db: str) -> None:
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE "{sa.make_url(db).database}" WITH (FORCE)'))


def _digest(db: str) -> tuple[Any, ...]:
    engine = sa.create_engine(db)
    with engine.connect() as conn:
        row = tuple(conn.execute(sa.text(DIGEST)).one())
    engine.dispose()
    return row


def _timed(command: list[str], env: dict[str, str]) -> tuple[float, int, float]:
    """Run ``command``; (seconds, peak RSS in KiB, CPU seconds: user + system).

    The CPU seconds are the command's own (not PostgreSQL's): on a machine shared with other
    work they hold better than the wall-clock seconds, which the others' load stretches."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{command[:4]} exited {process.returncode}")
    return elapsed, usage.ru_maxrss, usage.ru_utime + usage.ru_stime


def _run(
    name: str, folder: Path, db: str, batch_size: int, baseline: Path | None = None
) -> tuple[float, int, float]:
    env = {
        **os.environ,
        "DATABASE_URL": db,
        "DDBCDC_MAPPINGS_DIR": str(ROOT / "schemas" / "tables"),
    }
    env["DDBCDC_DYNAMODB_ENDPOINT"] = env["DDBCDC_KINESIS_ENDPOINT"] = "http://127.0.0.1:9"
    env.setdefault("AWS_ACCESS_KEY_ID", "bench")
    env.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    if name == "floor":
        floor = str(Path(__file__).resolve().parent / "export_floor.py")
        return _timed([sys.executable, floor, str(folder), "--batch-size", str(batch_size)], env)
    if name.startswith("baseline"):
        env["PYTHONPATH"] = str(baseline)
    subprocess.run(
        [sys.executable, "-m", "ddbcdc.cli", "migrate"], env=env, check=True, capture_output=True
    )
    command = [sys.executable, "-m", "ddbcdc.cli", "snapshot", "--from-export", str(folder)]
    command += ["--force", "--no-progress", "--batch-size", str(batch_size)]
    if name.endswith("-2"):
        command += ["--parallel", "2"]
    return _timed(command, {**env, "DDBCDC_LOG_LEVEL": "WARNING"})


def _breakdown(folder: Path, db: str, batch_size: int) -> dict[str, float]:
    """The import in-process, the pipeline's prepare and apply timed."""
    from ddbcdc.backfill import state
    from ddbcdc.backfill.export import open_location, read_manifest
    from ddbcdc.backfill.feed import backfill_pipeline, margin_us
    from ddbcdc.backfill.importer import export_run, import_export
    from ddbcdc.migrate.run import upgrade
    from ddbcdc.schema.mapping import load_mappings
    from ddbcdc.settings import Settings

    mappings = load_mappings(ROOT / "schemas" / "tables")
    engine = sa.create_engine(db)
    upgrade(engine, mappings)
    engine.dispose()
    settings = Settings(database_url=db)
    location = open_location(str(folder))
    run, segments = export_run(
        read_manifest(location), location, margin_us=margin_us(settings), mapping=mappings[0]
    )
    pipeline = backfill_pipeline(settings, mappings[0], connections=1)
    spent = {"prepare": 0.0, "apply": 0.0}
    for half in spent:
        method = getattr(pipeline, half)

        def timed(*args: Any, _method: Any = method, _half: str = half, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return _method(*args, **kwargs)
            finally:
                spent[_half] += time.perf_counter() - started

        setattr(pipeline, half, timed)
    state.start_run(pipeline.engine, run, segments, what="export time")
    started = time.perf_counter()
    import_export(run, location, pipeline=pipeline, batch_size=batch_size)
    wall = time.perf_counter() - started
    pipeline.close()
    return {"wall_s": round(wall, 2), **{f"{k}_s": round(v, 2) for k, v in spent.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--breakdown", action="store_true")
    parser.add_argument("--baseline", type=Path, help="another checkout's src/ to compare with")
    parser.add_argument(
        "--parallel", action="store_true", help="also ddbcdc-2: two data files at once"
    )
    args = parser.parse_args()
    work = Path(os.environ.get("DDBCDC_BENCH_DIR") or tempfile.mkdtemp(prefix="ddbcdc-export-"))
    url = os.environ.get("DATABASE_URL")
    server = None if url else TemporaryPostgres(durable=True).start()
    url = url or server.url  # type: ignore[union-attr]
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    report: list[dict[str, Any]] = []
    try:
        for items in args.items:
            folder = work / f"export-{items}"
            if not (folder / "manifest-summary.json").exists():
                write_export(folder, items, 250_000)
            names = ["ddbcdc", "floor", *(["ddbcdc-2"] if args.parallel else [])]
            if args.baseline is not None:
                names += ["baseline", *(["baseline-2"] if args.parallel else [])]
            seconds: dict[str, list[float]] = {name: [] for name in names}
            cpus: dict[str, list[float]] = {name: [] for name in names}
            rss: list[int] = []
            base_rss: list[int] = []
            digests = set()
            for round_ in range(args.rounds):
                for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                    db = _database(admin, url)
                    try:
                        elapsed, peak, cpu = _run(name, folder, db, args.batch_size, args.baseline)
                        digests.add(_digest(db))
                    finally:
                        _drop(admin, db)
                    seconds[name].append(elapsed)
                    cpus[name].append(cpu)
                    if name.startswith("ddbcdc"):
                        rss.append(peak)
                    elif name != "floor":
                        base_rss.append(peak)
                    memory = f"  peak RSS {peak / 1024:.0f} MiB" if name != "floor" else ""
                    rate = items / elapsed
                    print(
                        f"{items:>9} round {round_}: {name:<10} {elapsed:6.2f}s {rate:9,.0f}/s"
                        + f"  cpu {cpu:6.2f}s"
                        + memory
                        + f"  load {os.getloadavg()[0]:.1f}"
                    )
            assert len(digests) == 1, f"contenders disagree: {digests}"
            entry: dict[str, Any] = {"items": items, "batch_size": args.batch_size}
            for name, values in seconds.items():
                entry[f"{name}_best_per_s"] = round(items / min(values))
                entry[f"{name}_median_per_s"] = round(items / statistics.median(values))
                entry[f"{name}_median_cpu_s"] = round(statistics.median(cpus[name]), 2)
            entry["ddbcdc_peak_rss_mib"] = round(max(rss) / 1024)
            if base_rss:
                entry["baseline_peak_rss_mib"] = round(max(base_rss) / 1024)
            entry["load_average"] = os.getloadavg()
            if args.breakdown:
                db = _database(admin, url)
                try:
                    entry["breakdown"] = _breakdown(folder, db, args.batch_size)
                finally:
                    _drop(admin, db)
            report.append(entry)
    finally:
        admin.dispose()
        if server is not None:
            server.stop()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
