"""Freshness benchmark: write-to-commit and arrival-to-commit through the real worker.

The real ``ddbcdc worker`` (KCL 3.1.3 MultiLangDaemon, ddbcdc shard processors) on the local
stack, one shard, a durable PostgreSQL (fsync on) with ``track_commit_timestamp`` on. Each
level is a fresh 1-shard stream and application, a worker started with the level's settings
(``DDBCDC_IDLE_TIME_BETWEEN_READS_MS``, ``DDBCDC_MAX_RECORDS``), a warm-up, then ``--duration``
seconds of changes at the level's rate (records/s per shard), paced every 100 ms:

- ``--path kinesis`` (default): change records in the Kinesis Data Streams for DynamoDB format
  put straight into kinesis-local, ``ApproximateCreationDateTime`` = when the record was
  built (so write-to-commit adds only the put to arrival-to-commit);
- ``--path dynamodb``: items written to DynamoDB (moto); moto's stream and the local bridge
  (DynamoDB Streams -> Kinesis) carry them, so write-to-commit includes both, with moto's
  millisecond ``ApproximateCreationDateTime``.

Per change (every change is an INSERT of its own key), measured exactly and independently of
the worker's own metrics: **commit** = PostgreSQL's commit timestamp of the change-log row's
transaction (``pg_xact_commit_timestamp(xmin)``), **arrival** = the record's
``ApproximateArrivalTimestamp`` read back from the stream, **write** = its
``ApproximateCreationDateTime``; one clock (this machine's). Reported: p50/p99/max of
commit - write and commit - arrival, the achieved rate, and from the worker's ``/metrics``:
batches, mean batch size and apply time, and its own histograms' p50/p99 (bucket bounds).

    .venv/bin/python benchmarks/freshness_bench.py [--levels 200,1000,4000] [--duration 20]
        [--idle-ms 250] [--max-records 1000] [--path kinesis|dynamodb] [--json out.json]

A level is ``RATE`` or ``RATE:IDLE_MS:MAX_RECORDS`` (e.g. ``1000:100:1000``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from ddbcdc.aws import clients as aws
from ddbcdc.aws.provision import ProvisionOptions, set_up
from ddbcdc.decode.attributes import marshal
from ddbcdc.local.postgres import TemporaryPostgres, free_port
from ddbcdc.local.stack import LocalStack
from ddbcdc.migrate.run import upgrade
from ddbcdc.schema.mapping import load_mappings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from worker_bench import percentiles

ROOT = Path(__file__).resolve().parents[1]
MAPPINGS_DIR = ROOT / "schemas" / "tables"
TICK_S = 0.1


@dataclass(frozen=True)
class Level:
    rate: int
    idle_ms: int
    max_records: int

    @classmethod
    def parse(cls, text: str, args: argparse.Namespace) -> Level:
        parts = [int(p) for p in text.split(":")]
        defaults = [args.idle_ms, args.max_records]
        return cls(parts[0], *(parts[1:] + defaults[len(parts) - 1 :]))


def change_record(userid: int, now_us: int) -> bytes:
    image = {"userid": userid, "first_name": "Ada", "last_name": "Lovelace", "phone": 2025550100}
    return orjson.dumps(
        {
            "awsRegion": "us-east-1",
            "eventID": f"fresh-{userid}",
            "eventName": "INSERT",
            "userIdentity": None,
            "recordFormat": "application/json",
            "tableName": "customers",
            "dynamodb": {
                "ApproximateCreationDateTime": now_us,
                "Keys": marshal({"userid": userid}),
                "NewImage": marshal(image),
                "SizeBytes": 60,
            },
            "eventSource": "aws:dynamodb",
        }
    )


class Producer:
    """Puts ``count`` changes per call, of keys counting up from ``first``."""

    def __init__(self, stack: LocalStack, path: str, stream: str, first: int) -> None:
        self.path, self.stream, self.next = path, stream, first
        self.first = first
        self.kinesis = aws.client("kinesis", stack.settings())
        self.dynamodb = aws.client("dynamodb", stack.settings())

    def put(self, count: int) -> None:
        keys = range(self.next, self.next + count)
        self.next += count
        if self.path == "kinesis":
            entries = [
                {"Data": change_record(k, time.time_ns() // 1000), "PartitionKey": str(k)}
                for k in keys
            ]
            for start in range(0, len(entries), 500):
                pending = entries[start : start + 500]
                while pending:
                    done = self.kinesis.put_records(StreamName=self.stream, Records=pending)
                    pending = [
                        e for e, r in zip(pending, done["Records"], strict=True) if "ErrorCode" in r
                    ]
            return
        items = [
            {"PutRequest": {"Item": marshal({"userid": k, "first_name": "Ada"})}} for k in keys
        ]
        for start in range(0, len(items), 25):
            request: dict[str, Any] = {"customers": items[start : start + 25]}
            while request:
                request = self.dynamodb.batch_write_item(RequestItems=request)["UnprocessedItems"]


def run_paced(producer: Producer, rate: int, duration: float) -> float:
    """``rate`` changes/s for ``duration`` s, in 100 ms ticks; the rate achieved."""
    per_tick = max(1, round(rate * TICK_S))
    started = time.monotonic()
    sent = 0
    while time.monotonic() - started < duration:
        producer.put(per_tick)
        sent += per_tick
        ahead = started + sent / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
    return sent / (time.monotonic() - started)


class Worker:
    """``ddbcdc worker`` for one level, its /metrics on a port of its own."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self._log = log.open("ab")
        command = [sys.executable, "-m", "ddbcdc.cli", "worker", "--metrics-port", str(self.port)]
        self.proc = subprocess.Popen(
            command, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=self._log, start_new_session=True,
        )  # fmt: skip

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            return str(r.read().decode())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


def committed(db: str, first: int, last: int) -> list[Any]:
    """(key, change time us, sequence, commit time us) of the level's changes in PostgreSQL."""
    query = sa.text(
        "SELECT userid, _ddbcdc_version_us AS version_us, _ddbcdc_sequence AS seq, "
        "(extract(epoch FROM pg_xact_commit_timestamp(xmin)) * 1e6)::bigint AS committed_us "
        "FROM ddbcdc_changes__customers WHERE userid BETWEEN :first AND :last"
    )
    engine = sa.create_engine(db)
    try:
        with engine.connect() as conn:
            return list(conn.execute(query, {"first": first, "last": last}).all())
    finally:
        engine.dispose()


def wait_committed(db: str, first: int, last: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(committed(db, first, last)) >= last - first + 1:
            return True
        time.sleep(0.5)
    return False


def arrivals(stack: LocalStack, stream: str) -> dict[int, int]:
    """Sequence number -> ApproximateArrivalTimestamp (epoch ms) of every record."""
    kinesis = aws.client("kinesis", stack.settings())
    found: dict[int, int] = {}
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            page = kinesis.get_records(ShardIterator=iterator, Limit=1000)
            for r in page["Records"]:
                found[int(r["SequenceNumber"])] = int(
                    r["ApproximateArrivalTimestamp"].timestamp() * 1000
                )
            if not page["Records"] and not page.get("MillisBehindLatest"):
                break
            iterator = page.get("NextShardIterator")
    return found


def buckets(body: str, name: str) -> dict[float, float]:
    """A worker histogram's cumulative buckets (upper bound -> count), over every table."""
    found: dict[float, float] = {}
    pattern = rf'^{name}_bucket{{(?:.*,)?le="([^"]+)".*}} (\S+)$'
    for le, value in re.findall(pattern, body, re.M):
        found[float(le)] = found.get(float(le), 0.0) + float(value)
    return found


def quantiles(counts: dict[float, float]) -> dict[str, float]:
    """p50/p99 (ms) of cumulative buckets, interpolated as Prometheus' histogram_quantile."""
    ordered = sorted(counts.items())
    if not ordered or ordered[-1][1] <= 0:
        return {}
    total = ordered[-1][1]

    def quantile(q: float) -> float:
        rank, lower, below = q * total, 0.0, 0.0
        for bound, count in ordered:
            if count >= rank:
                if bound == float("inf"):
                    return lower * 1000
                return (lower + (bound - lower) * (rank - below) / max(count - below, 1)) * 1000
            lower, below = bound, count
        return lower * 1000

    return {"p50_ms": round(quantile(0.5), 1), "p99_ms": round(quantile(0.99), 1)}


def total(body: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", body, re.M))


def worker_view(before: str, after: str) -> dict[str, Any]:
    """What the worker's /metrics say about the paced run (the warm-up taken out)."""

    def delta(name: str) -> float:
        return total(after, name) - total(before, name)

    def histogram(name: str) -> dict[str, float]:
        old = buckets(before, name)
        return quantiles({le: n - old.get(le, 0.0) for le, n in buckets(after, name).items()})

    batches = delta("ddbcdc_worker_batches_total")
    return {
        "batches": int(batches),
        "mean_batch_records": round(delta("ddbcdc_worker_records_total") / max(batches, 1), 1),
        "mean_apply_ms": round(
            1000 * delta("ddbcdc_worker_apply_seconds_sum") / max(batches, 1), 1
        ),
        "arrival_to_commit_histogram": histogram("ddbcdc_worker_arrival_to_commit_seconds"),
        "write_to_commit_histogram": histogram("ddbcdc_worker_write_to_commit_seconds"),
    }


def new_stream(args: argparse.Namespace, stack: LocalStack, name: str) -> str:
    """A 1-shard stream (with ``--path dynamodb``, the table's destination too)."""
    kinesis = aws.client("kinesis", stack.settings())
    if args.path == "kinesis":
        kinesis.create_stream(StreamName=name, ShardCount=1)
        kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 1})
    else:
        set_up(
            aws.client("dynamodb", stack.settings()),
            kinesis,
            ProvisionOptions(stream=name, shards=1, local=True, timeout=60),
        )
    return name


def run_level(
    index: int,
    level: Level,
    args: argparse.Namespace,
    stack: LocalStack,
    db: str,
    log: Path,
    name: str,
) -> dict[str, Any]:
    env = stack.worker_env(
        os.environ,
        DATABASE_URL=db,
        DDBCDC_STREAM_NAME=name,
        DDBCDC_APPLICATION_NAME=name,
        DDBCDC_MAPPINGS_DIR=str(MAPPINGS_DIR),
        DDBCDC_IDLE_TIME_BETWEEN_READS_MS=str(level.idle_ms),
        DDBCDC_MAX_RECORDS=str(level.max_records),
        DDBCDC_FAILOVER_TIME_MS="5000",
        DDBCDC_SHUTDOWN_GRACE_MS="10000",
    )
    base = (index + 1) * 10_000_000
    producer = Producer(stack, args.path, name, base)
    worker = Worker(env, log)
    try:
        producer.put(5)  # warm-up: the shard has a processor before the clock starts
        if not wait_committed(db, base, base + 4, timeout=240):
            raise SystemExit(f"{name}: the worker did not start ({log})")
        first = producer.next
        before = worker.metrics()
        print(f"{name}: {level}", file=sys.stderr)
        achieved = run_paced(producer, level.rate, args.duration)
        last = producer.next - 1
        drained = wait_committed(db, first, last, timeout=args.drain_timeout)
        body = worker.metrics()
    finally:
        worker.stop()
    arrived = arrivals(stack, name)
    found = committed(db, first, last)
    write = [(r.committed_us - r.version_us) / 1e3 for r in found]
    arrival = [r.committed_us / 1e3 - arrived[int(r.seq)] for r in found if int(r.seq) in arrived]
    return {
        "path": args.path,
        "rate_per_shard": level.rate,
        "idle_ms": level.idle_ms,
        "max_records": level.max_records,
        "achieved_per_s": round(achieved),
        "changes": last - first + 1,
        "committed": len(found),
        "drained": drained,
        "write_to_commit": percentiles(write),
        "arrival_to_commit": percentiles(arrival),
        "worker": worker_view(before, body),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="200,1000,4000", help="RATE[:IDLE_MS:MAX_RECORDS],...")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load per level")
    parser.add_argument("--idle-ms", type=int, default=250, help="default polling interval")
    parser.add_argument("--max-records", type=int, default=1000, help="default batch size")
    parser.add_argument("--path", choices=["kinesis", "dynamodb"], default="kinesis")
    parser.add_argument("--drain-timeout", type=float, default=180.0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    levels = [Level.parse(text, args) for text in args.levels.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="ddbcdc-freshness-") as tmp:
        log = Path(tmp) / "worker.log"
        settings = {"track_commit_timestamp": "on"}
        with (
            TemporaryPostgres(durable=True, settings=settings) as pg,
            LocalStack(database_url=pg.url) as stack,
        ):
            os.environ.update(
                {k: stack.env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
            )
            engine = sa.create_engine(pg.url)
            upgrade(engine, load_mappings(MAPPINGS_DIR))
            engine.dispose()
            # kinesis-local's PutRecords slows down as a shard grows: a fresh stream per level.
            # Through DynamoDB, one stream and application for all (the table has one
            # destination; a level's worker resumes from the previous one's checkpoints).
            shared = new_stream(args, stack, "fresh-ddb") if args.path == "dynamodb" else None
            for index, level in enumerate(levels):
                name = shared or new_stream(args, stack, f"fresh-{index}")
                try:
                    results.append(run_level(index, level, args, stack, pg.url, log, name))
                except BaseException:
                    print(log.read_text(errors="replace")[-5000:], file=sys.stderr)
                    raise
                print(json.dumps(results[-1]), file=sys.stderr)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
