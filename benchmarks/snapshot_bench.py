"""``ddbcdc snapshot`` and ``ddbcdc verify`` through moto (server mode), and what bounds them.

Starts moto and a durable PostgreSQL (fsync on), writes ITEMS customers items into a table
(BatchWriteItem), then for each segment count runs, timed from outside:

- ``ddbcdc snapshot --segments S --force`` into a fresh database;
- ``ddbcdc verify --segments S`` against the copy it made (must find no drift).

For each run it reports items/s and the CPU seconds spent by moto's server process, by the
ddbcdc process (``wait4``) and by PostgreSQL (its server process and the backends it reaped),
from /proc: the one near a full core per wall second is the bound.

    .venv/bin/python benchmarks/snapshot_bench.py [--items 20000] [--segments 1 2 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import sqlalchemy as sa

from ddbcdc.local.moto import launch_moto, wait_for_moto
from ddbcdc.local.postgres import TemporaryPostgres

ROOT = Path(__file__).resolve().parents[1]
_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its waited-for children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / _TICKS


def _postmaster(port: int) -> int:
    """The PostgreSQL server process listening on ``port`` (its backends are its children)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if f"port={port}".encode() in cmdline.read_bytes().split(b"\0"):
                return int(cmdline.parent.name)
        except OSError:
            continue
    raise SystemExit(f"no PostgreSQL on port {port}")


def _load(client: Any, table: str, items: int) -> None:
    client.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "userid", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "userid", "AttributeType": "N"}],
        BillingMode="PAY_PER_REQUEST",
    )
    for start in range(1, items + 1, 25):
        requests = [
            {
                "PutRequest": {
                    "Item": {
                        "userid": {"N": str(n)},
                        "first_name": {"S": "Grace"},
                        "last_name": {"S": "Hopper"},
                        "phone": {"N": str(5550000000 + n)},
                    }
                }
            }
            for n in range(start, min(start + 25, items + 1))
        ]
        client.batch_write_item(RequestItems={table: requests})


def _timed(argv: list[str], env: dict[str, str], watched: dict[str, int]) -> dict[str, float]:
    before = {name: _cpu(pid) for name, pid in watched.items()}
    started = time.perf_counter()
    process = subprocess.Popen(
        argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert process.stdout is not None
    out = process.stdout.read()
    process.stdout.close()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{argv[3]} exited {code}: {out[-500:]!r}")
    time.sleep(0.5)  # the backend that served the command exits and is counted
    result = {"wall_s": round(wall, 2), "ddbcdc_cpu_s": round(usage.ru_utime + usage.ru_stime, 2)}
    for name, pid in watched.items():
        result[f"{name}_cpu_s"] = round(_cpu(pid) - before[name], 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--segments", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="ddbcdc-snapshot-bench-"))
    moto, endpoint = launch_moto(log_path=logs / "moto.log")
    pg = TemporaryPostgres(durable=True).start()
    results = []
    try:
        wait_for_moto(moto, endpoint)
        creds = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        client = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1", **creds)
        table = "customers"
        _load(client, table, args.items)
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "DDBCDC_DYNAMODB_ENDPOINT": endpoint,
            "DDBCDC_KINESIS_ENDPOINT": "http://127.0.0.1:9",
            "DDBCDC_MAPPINGS_DIR": str(ROOT / "schemas" / "tables"),
        }
        admin = sa.create_engine(pg.url, isolation_level="AUTOCOMMIT")
        for segments in args.segments:
            name = f"bench_{uuid.uuid4().hex[:8]}"
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
            db = sa.make_url(pg.url).set(database=name).render_as_string(hide_password=False)
            run_env = {**env, "DATABASE_URL": db}
            cli = [sys.executable, "-m", "ddbcdc.cli"]
            subprocess.run([*cli, "migrate"], env=run_env, check=True, capture_output=True)
            watched = {"moto": moto.pid, "postgresql": _postmaster(pg.port)}
            seg = ["--segments", str(segments), "--no-progress"]
            snap = _timed([*cli, "snapshot", *seg, "--force"], run_env, watched)
            check = _timed([*cli, "verify", *seg, "--json"], run_env, watched)
            for label, run in (("snapshot", snap), ("verify", check)):
                run["items_per_s"] = round(args.items / run["wall_s"])
                print(f"{label:<8} segments {segments}: {run}")
                results.append({"command": label, "segments": segments, **run})
        admin.dispose()
    finally:
        pg.stop()
        moto.stop()
    print(json.dumps({"items": args.items, "runs": results}, indent=2))


if __name__ == "__main__":
    main()
