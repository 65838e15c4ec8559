"""The import side of ``ddbcdc snapshot``: Scan pages fed from memory, against the export floor.

A snapshot through moto is bound by moto (see ``snapshot_bench.py``); this measures what the
rest of the snapshot path can take. It writes the export of ``export_bench.py``
(``export_data.py``: ITEMS customers items), then, ROUNDS times, runs each contender on a
fresh database of one durable PostgreSQL (fsync on), timed from outside, interleaved:

- ``ddbcdc``: this script with ``--drive``: ``run_snapshot`` of a new scan run (one segment per
  data file group, ``--segments``), each segment's pages of PAGE items read from the export's
  data files instead of a Scan (gzip and ``orjson.loads`` per line, the floor's own reading);
  everything after the Scan is the command's: event ids, every row through the pipeline
  (decode and cleanse or made straight from its item, the version rule, dead letters), the
  segment's position committed with each page;
- ``baseline`` (``--baseline SRC``): the same with another checkout's ``src``;
- ``floor``: ``export_floor.py`` on the same export (the floor of ``export_bench.py``).

Every contender must end with the same live rows.

    .venv/bin/python benchmarks/snapshot_ceiling.py [--items 200000] [--rounds 3] \\
        [--page-items 10000] [--segments 1] [--baseline ../old/src]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ddbcdc.local.postgres import TemporaryPostgres
from export_bench import ROOT, _database, _digest, _drop, _timed
from export_data import write_export


def _pages(files: list[Path], page_items: int, request_us: int) -> Iterator[Any]:
    from ddbcdc.backfill.scan import Page

    items: list[dict[str, Any]] = []
    for path in files:
        with gzip.open(path, "rb") as lines:
            for line in lines:
                items.append(orjson.loads(line)["Item"])
                if len(items) == page_items:
                    yield Page(items, {"userid": items[-1]["userid"]}, request_us, 0.0)
                    items = []
    yield Page(items, None, request_us, 0.0)


def drive(folder: Path, page_items: int, segments: int) -> None:
    """One snapshot of the export's items, fed to ``run_snapshot`` as Scan pages."""
    from ddbcdc.backfill import snapshot, state
    from ddbcdc.backfill.feed import backfill_pipeline
    from ddbcdc.backfill.records import now_us
    from ddbcdc.runtime import tune_gc
    from ddbcdc.schema.mapping import load_mappings
    from ddbcdc.settings import Settings

    tune_gc()  # as `ddbcdc snapshot` does
    files = sorted((folder / "data").glob("*.json.gz"))
    request_us = now_us()

    def scan_pages(client: Any, table: str, *, segment: int, **_: Any) -> Iterator[Any]:
        return _pages(files[segment::segments], page_items, request_us)

    snapshot.scan_pages = scan_pages  # type: ignore[assignment]
    settings = Settings()
    mapping = load_mappings(settings.mappings_dir)[0]
    options = snapshot.SnapshotOptions(segments=segments)
    description = {"KeySchema": [{"AttributeName": "userid", "KeyType": "HASH"}]}
    run, parts = snapshot.new_scan_run(settings, mapping, description, options)
    pipeline = backfill_pipeline(settings, mapping, connections=segments)
    state.start_run(pipeline.engine, run, parts, what="snapshot start")
    result = snapshot.run_snapshot(settings, run, client=None, pipeline=pipeline, options=options)
    pipeline.close()
    if not result.done or result.counts.dead_lettered:
        raise SystemExit(f"snapshot not clean: {result}")


def _run(name: str, args: argparse.Namespace, folder: Path, db: str) -> tuple[float, float]:
    env = {
        **os.environ,
        "DATABASE_URL": db,
        "DDBCDC_MAPPINGS_DIR": str(ROOT / "schemas" / "tables"),
        "DDBCDC_LOG_LEVEL": "WARNING",
    }
    if name == "floor":
        floor = str(Path(__file__).resolve().parent / "export_floor.py")
        command = [sys.executable, floor, str(folder), "--batch-size", str(args.page_items)]
        elapsed, _, cpu = _timed(command, env)
        return elapsed, cpu
    if name == "baseline":
        env["PYTHONPATH"] = str(args.baseline)
    subprocess.run(
        [sys.executable, "-m", "ddbcdc.cli", "migrate"], env=env, check=True, capture_output=True
    )
    command = [sys.executable, __file__, "--drive", str(folder)]
    command += ["--page-items", str(args.page_items), "--segments", str(args.segments)]
    elapsed, _, cpu = _timed(command, env)
    return elapsed, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--page-items", type=int, default=10_000)
    parser.add_argument("--segments", type=int, default=1)
    parser.add_argument("--baseline", type=Path, help="another checkout's src/ to compare with")
    parser.add_argument("--drive", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive is not None:
        drive(args.drive, args.page_items, args.segments)
        return
    work = Path(os.environ.get("DDBCDC_BENCH_DIR") or tempfile.mkdtemp(prefix="ddbcdc-ceiling-"))
    folder = work / f"export-{args.items}"
    if not (folder / "manifest-summary.json").exists():
        write_export(folder, args.items, 250_000)
    url = os.environ.get("DATABASE_URL")
    server = None if url else TemporaryPostgres(durable=True).start()
    url = url or server.url  # type: ignore[union-attr]
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    names = ["ddbcdc", "floor", *(["baseline"] if args.baseline is not None else [])]
    seconds: dict[str, list[float]] = {name: [] for name in names}
    cpus: dict[str, list[float]] = {name: [] for name in names}
    digests = set()
    try:
        for round_ in range(args.rounds):
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                db = _database(admin, url)
                try:
                    elapsed, cpu = _run(name, args, folder, db)
                    digests.add(_digest(db))
                finally:
                    _drop(admin, db)
                seconds[name].append(elapsed)
                cpus[name].append(cpu)
                rate = args.items / elapsed
                load = os.getloadavg()[0]
                print(
                    f"round {round_}: {name:<9} {elapsed:6.2f}s {rate:9,.0f}/s"
                    f"  cpu {cpu:6.2f}s  load {load:.1f}"
                )
    finally:
        admin.dispose()
        if server is not None:
            server.stop()
    assert len(digests) == 1, f"contenders disagree: {digests}"
    report: dict[str, Any] = {"items": args.items, "page_items": args.page_items}
    for name, values in seconds.items():
        report[f"{name}_best_per_s"] = round(args.items / min(values))
        report[f"{name}_median_per_s"] = round(args.items / statistics.median(values))
        report[f"{name}_median_cpu_s"] = round(statistics.median(cpus[name]), 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
