"""Input-forms benchmark: the real ``ddbcdc apply`` on the same changes in each input form.

Generates CHANGES Kinesis-format change records (``materialize_bench.generate``) and writes
them as JSON Lines, a pretty-printed JSON array, a Lambda event (Kinesis source) and ``aws
kinesis get-records`` output. Each round runs ``ddbcdc apply FILE`` once per form, as a
subprocess, on a fresh migrated database of one durable PostgreSQL (``TemporaryPostgres(
durable=True)``, or the server in DATABASE_URL), and reports per form: wall time, the
changes/s the command reports, the command's own CPU time (user + system: what the reader
costs, and steady when the machine is shared) and its peak RSS.

    .venv/bin/python benchmarks/apply_forms_bench.py [--changes 200000] [--rounds 3]
        [--forms jsonl,array,lambda,get-records] [--src DIR ...]

``--src`` runs the command from other source trees too (``PYTHONPATH=DIR``), interleaved
round by round: give a checkout's ``src`` of the code before a change to compare (with
``--forms jsonl``, the one form older code reads).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from ddbcdc.local.postgres import TemporaryPostgres
from ddbcdc.migrate.run import upgrade
from ddbcdc.schema.mapping import load_mappings
from materialize_bench import generate  # this folder: the script's own

ROOT = Path(__file__).resolve().parents[1]
MAPPINGS = ROOT / "schemas" / "tables"
SEQUENCE = 49600000000000000000000000000000000000000000000000000000

# Runs the command in-process and reports its own CPU time and peak RSS on stderr (VmHWM:
# ru_maxrss would count the benchmark's own memory, which a forked child has before exec).
RUNNER = (
    "import resource, sys; from ddbcdc.cli import main; code = main(sys.argv[1:]); "
    "u = resource.getrusage(resource.RUSAGE_SELF); "
    "hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0]; "
    "print('bench', u.ru_utime + u.ru_stime, hwm, file=sys.stderr); sys.exit(code)"
)


def _lambda(lines: list[bytes]) -> bytes:
    records = [
        {
            "kinesis": {
                "partitionKey": str(i % 977),
                "sequenceNumber": str(SEQUENCE + i),
                "data": base64.b64encode(line).decode(),
                "approximateArrivalTimestamp": 1714521600.123,
            },
            "eventSource": "aws:kinesis",
            "eventName": "aws:kinesis:record",
            "eventID": f"shardId-000000000000:{SEQUENCE + i}",
        }
        for i, line in enumerate(lines)
    ]
    return orjson.dumps({"Records": records}, option=orjson.OPT_INDENT_2)


def _get_records(lines: list[bytes]) -> bytes:
    records = [
        {
            "SequenceNumber": str(SEQUENCE + i),
            "ApproximateArrivalTimestamp": "2024-05-01T12:00:00.000000+00:00",
            "Data": base64.b64encode(line).decode(),
            "PartitionKey": str(i % 977),
        }
        for i, line in enumerate(lines)
    ]
    output = {"Records": records, "NextShardIterator": "AAAA", "MillisBehindLatest": 0}
    return orjson.dumps(output, option=orjson.OPT_INDENT_2)


FORMS: dict[str, Callable[[list[bytes]], bytes]] = {
    "jsonl": lambda lines: b"\n".join(lines) + b"\n",
    "array": lambda lines: orjson.dumps(
        [orjson.loads(line) for line in lines], option=orjson.OPT_INDENT_2
    ),
    "lambda": _lambda,
    "get-records": _get_records,
}


def run_once(admin: sa.Engine, server_url: str, path: Path, src: str | None) -> dict[str, Any]:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)
    engine = sa.create_engine(url)
    upgrade(engine, load_mappings(MAPPINGS))
    engine.dispose()
    env = {**os.environ, "DATABASE_URL": url, "DDBCDC_MAPPINGS_DIR": str(MAPPINGS)}
    if src:
        env["PYTHONPATH"] = src
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", RUNNER, "apply", str(path), "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    bench = [line for line in result.stderr.splitlines() if line.startswith("bench ")]
    if result.returncode != 0 or not bench:
        raise SystemExit(f"ddbcdc apply {path} failed:\n{result.stderr[-2000:]}")
    _, cpu, rss_kb = bench[-1].split()
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    return {"wall": wall, "cpu": float(cpu), "rss_mb": int(rss_kb) / 1024, **summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=200_000)
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--forms", default=",".join(FORMS))
    parser.add_argument("--src", action="append", default=[], help="another source tree")
    args = parser.parse_args()
    forms = [f.strip() for f in args.forms.split(",") if f.strip()]
    lines = generate(args.changes, args.keys).splitlines()
    sources: list[str | None] = [None, *args.src]
    with tempfile.TemporaryDirectory(prefix="ddbcdc-forms-") as tmp:
        paths = {}
        for form in forms:
            paths[form] = Path(tmp) / f"changes.{form}"
            paths[form].write_bytes(FORMS[form](lines))
        server = None if os.environ.get("DATABASE_URL") else TemporaryPostgres(durable=True)
        try:
            server_url = server.start().url if server else os.environ["DATABASE_URL"]
            admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
            runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
            for _ in range(args.rounds):
                for form in forms:
                    for src in sources:
                        run = run_once(admin, server_url, paths[form], src)
                        runs.setdefault((form, src or "this checkout"), []).append(run)
            admin.dispose()
        finally:
            if server is not None:
                server.stop()
        for (form, src), found in runs.items():
            best = min(found, key=lambda r: r["cpu"])
            size = paths[form].stat().st_size / 1e6
            print(
                json.dumps(
                    {
                        "form": form,
                        "detected": best.get("form"),
                        "source": src,
                        "file_mb": round(size, 1),
                        "cpu_s_best": round(min(r["cpu"] for r in found), 2),
                        "cpu_s_median": round(sorted(r["cpu"] for r in found)[len(found) // 2], 2),
                        "cpu_us_per_change": round(best["cpu"] / args.changes * 1e6, 1),
                        "wall_s_best": round(min(r["wall"] for r in found), 2),
                        "changes_per_s_best": max(r["changes_per_second"] for r in found),
                        "peak_rss_mb": round(max(r["rss_mb"] for r in found), 1),
                    }
                )
            )


if __name__ == "__main__":
    main()
