"""Worker benchmark: sustained records/s per shard and write -> PostgreSQL commit delay.

Runs the real ``ddbcdc worker`` (KCL 3.1.3 MultiLangDaemon + ddbcdc shard processors) against
the local stack (kinesis-local, moto for the KCL's lease tables) and a durable throwaway
PostgreSQL (``TemporaryPostgres(durable=True)``: fsync on), in three phases:

1. **sustained** (``--path kinesis``, default): a paced producer puts customers INSERTs in the
   exact Kinesis Data Streams for DynamoDB format straight into Kinesis, ``--rate`` records/s
   *per shard* for ``--duration`` s, every record stamped ``ApproximateCreationDateTime`` =
   the time it was sent. With ``--path dynamodb`` the producer writes the items to DynamoDB
   (moto) instead and the local bridge forwards them (ApproximateCreationDateTime is then
   moto's stream timestamp, millisecond precision): the whole local path, whose own ceiling
   is moto's, not the worker's. With ``--path dynamodb-streams`` the worker reads the
   table's own DynamoDB stream through the DynamoDB Streams Kinesis Adapter (the local
   stack's DynamoDB Streams front over moto, no Kinesis): timestamps are whole seconds, so
   the delay includes up to a second of rounding down.
2. **delay**: per row, ``_ddbcdc_updated_at`` (``now()`` of the batch's transaction, a few ms
   before its commit) minus ``_ddbcdc_version_us`` (the record's
   ApproximateCreationDateTime): p50/p90/p99/max over the run and over its last 10 s.
   Producer, worker and PostgreSQL share this machine's clock.
3. **catch-up**: the worker is stopped, ``--backlog`` records per shard are put (into
   Kinesis; into DynamoDB with ``--path dynamodb-streams``), the worker restarts from its
   checkpoints and the drain rate per shard is measured from the first to the last commit:
   the worker's ceiling, which the sustained rate must stay under.

    .venv/bin/python benchmarks/worker_bench.py [--rate 1000] [--duration 30] [--shards 2]
        [--backlog 5000] [--path kinesis|dynamodb|dynamodb-streams] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
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

ROOT = Path(__file__).resolve().parents[1]
MAPPINGS_DIR = ROOT / "schemas" / "tables"
STREAM = "ddbcdc-bench"
APPLICATION = "ddbcdc-bench"


def kinesis_record(userid: int, now_us: int) -> bytes:
    keys = {"userid": userid}
    image = {"userid": userid, "first_name": "Ada", "last_name": "Lovelace", "phone": 2025550100}
    return orjson.dumps(
        {
            "awsRegion": "us-east-1",
            "eventID": f"bench-{userid}",
            "eventName": "INSERT",
            "userIdentity": None,
            "recordFormat": "application/json",
            "tableName": "customers",
            "dynamodb": {
                "ApproximateCreationDateTime": now_us,
                "Keys": marshal(keys),
                "NewImage": marshal(image),
                "SizeBytes": 60,
            },
            "eventSource": "aws:dynamodb",
        }
    )


class KinesisProducer:
    """Puts records round-robin over the shards (explicit hash keys), paced per 100 ms tick."""

    def __init__(self, stack: LocalStack) -> None:
        self.client = aws.client("kinesis", stack.settings())
        shards = self.client.list_shards(StreamName=STREAM)["Shards"]
        self.hash_keys = [s["HashKeyRange"]["StartingHashKey"] for s in shards]
        self.next_id = 1
        # (first id, last id, epoch us when PutRecords returned): Kinesis had them by then.
        self.acks: list[tuple[int, int, int]] = []
        self.put_seconds: list[float] = []

    def put(self, count: int) -> None:
        """Put ``count`` records per shard, stamped with the current time."""
        entries = []
        for _ in range(count):
            for hash_key in self.hash_keys:
                now_us = time.time_ns() // 1000
                entries.append(
                    {
                        "Data": kinesis_record(self.next_id, now_us),
                        "PartitionKey": str(self.next_id),
                        "ExplicitHashKey": hash_key,
                    }
                )
                self.next_id += 1
        first = self.next_id - len(entries)
        started = time.monotonic()
        for start in range(0, len(entries), 500):
            chunk = entries[start : start + 500]
            while chunk:
                failed = self.client.put_records(StreamName=STREAM, Records=chunk)
                results = zip(chunk, failed["Records"], strict=True)
                chunk = [e for e, r in results if "ErrorCode" in r]
        self.put_seconds.append(time.monotonic() - started)
        self.acks.append((first, self.next_id - 1, time.time_ns() // 1000))


class DynamoDBProducer:
    """Writes customers items to DynamoDB (moto), 25 per BatchWriteItem, on 4 threads."""

    def __init__(self, stack: LocalStack, shards: int) -> None:
        self.client = aws.client("dynamodb", stack.settings())
        self.shards = shards
        self.next_id = 1
        self.put_seconds: list[float] = []
        self.acks: list[tuple[int, int, int]] = []  # no Kinesis acknowledgement here

    def put(self, count: int) -> None:
        """Write ``count`` x shards items (the bridge spreads them by partition key)."""
        items = []
        for _ in range(count * self.shards):
            items.append(
                {
                    "PutRequest": {
                        "Item": marshal(
                            {"userid": self.next_id, "first_name": "Ada", "phone": 2025550100}
                        )
                    }
                }
            )
            self.next_id += 1
        batches = [items[i : i + 25] for i in range(0, len(items), 25)]
        threads = [threading.Thread(target=self._write, args=(batches[i::4],)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def _write(self, batches: list[list[dict[str, Any]]]) -> None:
        for batch in batches:
            pending: dict[str, Any] = {"customers": batch}
            while pending:
                pending = self.client.batch_write_item(RequestItems=pending)["UnprocessedItems"]


def run_paced(producer: Any, rate: int, duration: float) -> float:
    """Produce ``rate`` records/s per shard for ``duration`` s; the achieved rate per shard."""
    tick = 0.1
    per_tick = max(1, round(rate * tick))
    started = time.monotonic()
    sent = 0
    while time.monotonic() - started < duration:
        producer.put(per_tick)
        sent += per_tick
        behind = started + sent / (per_tick / tick) - time.monotonic()
        if behind > 0:
            time.sleep(behind)
    return sent / (time.monotonic() - started)


class Worker:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ddbcdc.cli", "worker", "--metrics-port", str(free_port())],
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            start_new_session=True,
        )

    def stop(self) -> None:
        """SIGTERM and wait (idempotent); SIGKILL the group if it does not stop."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


def rows(db: str, sql: str) -> list[Any]:
    engine = sa.create_engine(db)
    with engine.connect() as conn:
        result = list(conn.execute(sa.text(sql)).all())
    engine.dispose()
    return result


def wait_rows(db: str, expected: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if rows(db, "SELECT count(*) FROM customers")[0][0] >= expected:
            return
        time.sleep(0.5)
    raise SystemExit(f"timed out: PostgreSQL did not reach {expected} rows")


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p90/p99/max/mean of ``values`` (milliseconds)."""
    if not values:
        return {}
    values = sorted(values)

    def pct(p: float) -> float:
        return round(values[min(len(values) - 1, int(p * len(values)))], 1)

    return {
        "count": len(values),
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": round(values[-1], 1),
        "mean_ms": round(statistics.fmean(values), 1),
    }


def delays(db: str, since_us: int, acks: list[tuple[int, int, int]]) -> dict[str, Any]:
    """Write -> commit, and Kinesis acknowledgement -> commit, for rows written since then."""
    found = rows(
        db,
        "SELECT userid, _ddbcdc_version_us, "
        "(extract(epoch FROM _ddbcdc_updated_at) * 1e6)::bigint AS committed_us "
        f"FROM customers WHERE _ddbcdc_version_us >= {since_us}",
    )
    ack_of: dict[int, int] = {}
    for first, last, ack_us in acks:
        for userid in range(first, last + 1):
            ack_of[userid] = ack_us
    written = [(r.committed_us - r._ddbcdc_version_us) / 1e3 for r in found]
    acked = [(r.committed_us - ack_of[r.userid]) / 1e3 for r in found if r.userid in ack_of]
    result = {"write_to_commit": percentiles(written)}
    if acked:
        result["kinesis_ack_to_commit"] = percentiles(acked)
    return result


def drain_rate(db: str, first_id: int, shards: int) -> dict[str, float]:
    [(first, last, count)] = rows(
        db,
        "SELECT min(_ddbcdc_updated_at), max(_ddbcdc_updated_at), count(*) FROM customers "
        f"WHERE userid >= {first_id}",
    )
    span = max((last - first).total_seconds(), 1e-3)
    return {
        "records": count,
        "seconds": round(span, 2),
        "per_shard_per_s": round(count / span / shards),
    }


def bench(args: argparse.Namespace, stack: LocalStack, db: str, workdir: Path) -> dict[str, Any]:
    os.environ.update({k: stack.env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")})
    settings = stack.settings()
    set_up(
        aws.client("dynamodb", settings),
        aws.client("kinesis", settings),
        ProvisionOptions(
            stream=STREAM, shards=args.shards, local=True, timeout=60, source=stack.source
        ),
    )
    streams = stack.source == "dynamodb-streams"
    env = stack.worker_env(
        os.environ,
        DATABASE_URL=db,
        DDBCDC_APPLICATION_NAME=APPLICATION,
        DDBCDC_MAPPINGS_DIR=str(MAPPINGS_DIR),
        DDBCDC_FAILOVER_TIME_MS="5000",
        DDBCDC_SHUTDOWN_GRACE_MS="10000",
        **({} if streams else {"DDBCDC_STREAM_NAME": STREAM}),
    )
    if streams:
        kinesis = producer = DynamoDBProducer(stack, args.shards)
    else:
        kinesis = KinesisProducer(stack)
        producer = kinesis if args.path == "kinesis" else DynamoDBProducer(stack, args.shards)
    workers = [Worker(env, workdir / "worker.log")]
    try:
        producer.put(10)  # warm-up: every shard gets a processor before the clock starts
        wait_rows(db, 10 * args.shards, timeout=180)
        print(f"worker up; producing {args.rate}/s per shard for {args.duration}s", file=sys.stderr)
        start_us = time.time_ns() // 1000
        achieved = run_paced(producer, args.rate, args.duration)
        end_us = time.time_ns() // 1000
        produced = producer.next_id - 1
        wait_rows(db, produced, timeout=300)
        result: dict[str, Any] = {
            "path": args.path,
            "shards": args.shards,
            "target_per_shard_per_s": args.rate,
            "achieved_per_shard_per_s": round(achieved),
            "duration_s": args.duration,
            "producer_put_ms": percentiles([x * 1000 for x in kinesis.put_seconds]),
            "delay": delays(db, start_us, kinesis.acks),
            "delay_last_10s": delays(db, end_us - 10_000_000, kinesis.acks),
        }
        if streams:  # whole-second versions: rows of the run's first second count too
            result["delay"] = delays(db, start_us // 1_000_000 * 1_000_000, [])
        if args.backlog:
            workers[-1].stop()
            first_id = kinesis.next_id = producer.next_id
            kinesis.put(args.backlog)
            workers.append(Worker(env, workdir / "worker.log"))
            wait_rows(db, kinesis.next_id - 1, timeout=600)
            result["catch_up"] = drain_rate(db, first_id, args.shards)
        return result
    finally:
        for worker in workers:
            worker.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=1000, help="records/s per shard")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--backlog", type=int, default=5000, help="records per shard; 0: skip")
    parser.add_argument(
        "--path", choices=["kinesis", "dynamodb", "dynamodb-streams"], default="kinesis"
    )
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ddbcdc-worker-bench-") as tmp:
        workdir = Path(tmp)
        source = "dynamodb-streams" if args.path == "dynamodb-streams" else "kinesis"
        with (
            TemporaryPostgres(durable=True) as pg,
            LocalStack(database_url=pg.url, source=source, shards=args.shards) as stack,
        ):
            engine = sa.create_engine(pg.url)
            upgrade(engine, load_mappings(MAPPINGS_DIR))
            engine.dispose()
            try:
                result = bench(args, stack, pg.url, workdir)
            except BaseException:
                log = workdir / "worker.log"
                if log.exists():
                    print(log.read_text(errors="replace")[-5000:], file=sys.stderr)
                raise
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
