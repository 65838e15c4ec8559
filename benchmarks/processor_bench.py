"""Shard processor benchmark: can one shard processor keep up with 1,000 records/s?

The local Kinesis emulator cannot carry that rate (see benchmarks/README.md, "worker"), so
this benchmark stands in for the KCL MultiLangDaemon instead: one real shard processor
process per shard (``workers/record_processor.py``, exactly what the daemon launches, with
the real pipeline and a durable PostgreSQL), driven over its stdin/stdout with the multilang
protocol the way the daemon drives it in polling mode:

- records "arrive" at ``--rate`` per second per shard, evenly spaced in time, each stamped
  with its arrival time as ``ApproximateCreationDateTime`` (customers INSERTs, unique keys);
- every ``--poll-ms`` (KCL's idleTimeBetweenReadsInMillis) the driver sends everything that
  arrived since the last batch (at most ``--max-records``), answers the processor's checkpoint
  request, and waits for its status before the next poll, as the KCL does per shard.

Reported per run: records/s per shard achieved, batch turnaround (send -> status), and the
delay from arrival to the commit in PostgreSQL (the commit timestamp of the row's transaction,
``track_commit_timestamp`` on).

``--backlog N`` runs at full speed instead: each shard has N records waiting (a catch-up),
built before the clock starts, and the driver sends the next ``--max-records`` batch as soon
as the processor reports the previous one done, as the KCL does when a shard is behind.
``--src PATH`` runs the processors from another checkout's ``src`` (to compare with it).

    .venv/bin/python benchmarks/processor_bench.py [--rate 1000] [--duration 30] [--shards 2]
    .venv/bin/python benchmarks/processor_bench.py --backlog 40000 --max-records 10000
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ddbcdc.local.postgres import TemporaryPostgres
from ddbcdc.migrate.run import upgrade
from ddbcdc.schema.mapping import load_mappings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from worker_bench import kinesis_record, percentiles, rows

ROOT = Path(__file__).resolve().parents[1]
MAPPINGS_DIR = ROOT / "schemas" / "tables"


def checkout(args: argparse.Namespace) -> Path:
    """The checkout whose processors run: this one, or the one of ``--src``."""
    return args.src.resolve().parent if args.src is not None else ROOT


class ShardDriver(threading.Thread):
    """Plays the daemon for one shard processor process."""

    def __init__(
        self, index: int, args: argparse.Namespace, env: dict[str, str], ready: threading.Barrier
    ) -> None:
        super().__init__(name=f"shard-{index}")
        self.shard = f"shardId-{index:012d}"
        self.args = args
        self.ready = ready
        self.first_key = index * 100_000_000 + 1
        self.sent = 0
        self.seconds = 0.0
        self.turnaround: list[float] = []
        self.failed: BaseException | None = None
        self.proc = subprocess.Popen(
            [sys.executable, str(checkout(args) / "workers" / "record_processor.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            text=True,
            bufsize=1,
        )

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def until_status(self, action: str) -> None:
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.shard}: processor exited during {action}")
            if not line.strip():
                continue
            message = json.loads(line)
            if message["action"] == "checkpoint":
                self.send({**message, "action": "checkpoint"})
            elif message["action"] == "status" and message["responseFor"] == action:
                return

    def batch(self, arrivals: list[int]) -> dict[str, Any]:
        records = []
        for stamp_us in arrivals:
            self.sent += 1
            key = self.first_key + self.sent
            records.append(
                {
                    "action": "record",
                    "data": base64.b64encode(kinesis_record(key, stamp_us)).decode(),
                    "partitionKey": str(key),
                    "sequenceNumber": str(10**20 + self.sent),
                    "subSequenceNumber": None,
                    "approximateArrivalTimestamp": stamp_us // 1000,
                }
            )
        return {"action": "processRecords", "millisBehindLatest": 0, "records": records}

    def run(self) -> None:
        try:
            self.drive()
        except BaseException as exc:
            self.failed = exc
            self.ready.abort()  # the main thread stops waiting for this shard's backlog
            raise

    def drive(self) -> None:
        self.send({"action": "initialize", "shardId": self.shard, "sequenceNumber": "TRIM_HORIZON",
                   "subSequenceNumber": 0})  # fmt: skip
        self.until_status("initialize")
        if self.args.backlog:
            self.catch_up()
        else:
            self.at_rate()
        self.send({"action": "shutdownRequested"})
        self.until_status("shutdownRequested")
        self.send({"action": "leaseLost"})
        self.until_status("leaseLost")
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=60)

    def catch_up(self) -> None:
        """The whole backlog, batch after batch, as fast as the processor takes it."""
        stamp = time.time_ns() // 1000 - 3_600_000_000
        size = self.args.max_records
        lines = []
        for start in range(0, self.args.backlog, size):
            count = min(size, self.args.backlog - start)
            lines.append(json.dumps(self.batch([stamp + start + i for i in range(count)])) + "\n")
        self.ready.wait()
        began = time.monotonic()
        for line in lines:
            sent = time.monotonic()
            assert self.proc.stdin is not None
            self.proc.stdin.write(line)
            self.proc.stdin.flush()
            self.until_status("processRecords")
            self.turnaround.append((time.monotonic() - sent) * 1000)
        self.seconds = time.monotonic() - began

    def at_rate(self) -> None:
        """Records arriving at --rate, polled every --poll-ms, for --duration."""
        period_us = 1e6 / self.args.rate
        start_us = time.time_ns() // 1000
        end_us = start_us + int(self.args.duration * 1e6)
        next_arrival = float(start_us)
        while next_arrival < end_us:
            now_us = min(time.time_ns() // 1000, end_us)
            arrivals = []
            while next_arrival <= now_us and len(arrivals) < self.args.max_records:
                arrivals.append(int(next_arrival))
                next_arrival += period_us
            if arrivals:
                began = time.monotonic()
                self.send(self.batch(arrivals))
                self.until_status("processRecords")
                self.turnaround.append((time.monotonic() - began) * 1000)
            time.sleep(self.args.poll_ms / 1000)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=1000, help="records/s per shard")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--poll-ms", type=int, default=250, help="idleTimeBetweenReadsInMillis")
    parser.add_argument("--max-records", type=int, default=1000, help="maxRecords per batch")
    parser.add_argument("--backlog", type=int, default=0, help="full speed: N records per shard")
    parser.add_argument("--src", type=Path, help="run the processors from this checkout's src")
    args = parser.parse_args()
    settings = {"track_commit_timestamp": "on"}
    with TemporaryPostgres(durable=True, settings=settings) as pg:
        if args.src is None:
            engine = sa.create_engine(pg.url)
            upgrade(engine, load_mappings(MAPPINGS_DIR))
            engine.dispose()
        else:  # the other checkout's own schema
            migrate_env = {**os.environ, "DATABASE_URL": pg.url, "PYTHONPATH": str(args.src)}
            migrate_env["DDBCDC_MAPPINGS_DIR"] = str(args.src.parent / "schemas" / "tables")
            command = [sys.executable, "-m", "ddbcdc.cli", "migrate"]
            subprocess.run(command, env=migrate_env, check=True, capture_output=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DDBCDC_", "PROMETHEUS"))}
        mappings = checkout(args) / "schemas" / "tables"
        env.update(DATABASE_URL=pg.url, DDBCDC_MAPPINGS_DIR=str(mappings),
                   DDBCDC_APPLICATION_NAME="bench", DDBCDC_LOG_LEVEL="WARNING")  # fmt: skip
        if args.src is not None:
            env["PYTHONPATH"] = str(args.src.resolve())
        ready = threading.Barrier(args.shards + 1)  # backlogs are built before the clock
        drivers = [ShardDriver(i, args, env, ready) for i in range(args.shards)]
        started = time.monotonic()
        for d in drivers:
            d.start()
        if args.backlog:
            with contextlib.suppress(threading.BrokenBarrierError):
                ready.wait()  # broken when a driver failed: reported below
        for d in drivers:
            d.join()
        failed = [d for d in drivers if d.failed is not None]
        if failed:
            for d in drivers:
                d.proc.kill()
            raise SystemExit(f"processor_bench: {failed[0].shard}: {failed[0].failed}")
        elapsed = time.monotonic() - started
        found = rows(
            pg.url,
            "SELECT (extract(epoch FROM pg_xact_commit_timestamp(xmin)) * 1e6)::bigint "
            "- _ddbcdc_version_us "
            "FROM customers",
        )
    if args.backlog:
        per_shard = [round(d.sent / d.seconds) for d in drivers]
        target: Any = "full speed"
    else:
        per_shard = [round(d.sent / args.duration) for d in drivers]
        target = args.rate
    result = {
        "shards": args.shards,
        "target_per_shard_per_s": target,
        "achieved_per_shard_per_s": round(sum(per_shard) / len(per_shard)),
        "per_shard": per_shard,
        "wall_s": round(elapsed, 1),
        "rows_in_postgres": len(found),
        "records_sent": sum(d.sent for d in drivers),
        "batch_turnaround": percentiles([t for d in drivers for t in d.turnaround]),
    }
    if not args.backlog:
        result["arrival_to_commit"] = percentiles([r[0] / 1e3 for r in found])
    print(json.dumps(result, indent=2))
    return 0 if result["rows_in_postgres"] == result["records_sent"] else 1


if __name__ == "__main__":
    sys.exit(main())
