"""Helpers for end-to-end tests that run ``ddbcdc worker`` on a stream of their own.

Records go straight into Kinesis (kinesis-local) in the Kinesis Data Streams for DynamoDB
format, so a test controls exactly what arrives, and when; the worker is the real command in
its own process group, as an operator runs it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from ddbcdc.decode.attributes import marshal
from ddbcdc.local.postgres import free_port

ROOT = Path(__file__).resolve().parents[1]
MAPPINGS_DIR = ROOT / "schemas" / "tables"


def create_stream(kinesis: Any, name: str, shards: int = 2) -> None:
    """A new Kinesis stream, ACTIVE."""
    kinesis.create_stream(StreamName=name, ShardCount=shards)
    deadline = time.monotonic() + 60
    while (
        kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamStatus"]
        != "ACTIVE"
    ):
        assert time.monotonic() < deadline, f"stream {name} not ACTIVE after 60 s"
        time.sleep(0.2)


def change(userid: int, micros: int) -> bytes:
    """A Kinesis-format INSERT of customer ``userid``."""
    return orjson.dumps(
        {
            "eventID": f"e2e-{userid}-{micros}",
            "eventName": "INSERT",
            "tableName": "customers",
            "eventSource": "aws:dynamodb",
            "recordFormat": "application/json",
            "dynamodb": {
                "ApproximateCreationDateTime": micros,
                "Keys": marshal({"userid": userid}),
                "NewImage": marshal({"userid": userid, "first_name": f"c{userid}"}),
            },
        }
    )


def put_changes(kinesis: Any, stream: str, userids: Iterable[int]) -> dict[str, str]:
    """Put an INSERT per user id; returns the last sequence number written to each shard."""
    entries = [{"Data": change(u, time.time_ns() // 1000), "PartitionKey": str(u)} for u in userids]
    last: dict[str, str] = {}
    for start in range(0, len(entries), 100):
        result = kinesis.put_records(StreamName=stream, Records=entries[start : start + 100])
        assert result.get("FailedRecordCount", 0) == 0, result
        for written in result["Records"]:
            shard, sequence = written["ShardId"], written["SequenceNumber"]
            if shard not in last or int(sequence) > int(last[shard]):
                last[shard] = sequence
    return last


def arrivals(kinesis: Any, stream: str) -> dict[int, float]:
    """Each record's ApproximateArrivalTimestamp (epoch seconds), by user id."""
    found: dict[int, float] = {}
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            page = kinesis.get_records(ShardIterator=iterator, Limit=1000)
            for record in page["Records"]:
                userid = int(record["PartitionKey"])
                found[userid] = record["ApproximateArrivalTimestamp"].timestamp()
            iterator = page.get("NextShardIterator") if page["Records"] else None
    return found


def query(database_url: str, sql: str) -> list[Any]:
    """Rows of ``sql``."""
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(sql)).all())
    finally:
        engine.dispose()


def progress(database_url: str, application: str) -> dict[str, str]:
    """The last applied sequence number of each shard of ``application`` that applied a
    record (a shard the worker listed but did not start has none)."""
    rows = query(
        database_url,
        "SELECT shard_id, sequence_number FROM ddbcdc_shard_progress "
        f"WHERE application = '{application}' AND sequence_number IS NOT NULL",
    )
    return {r.shard_id: r.sequence_number for r in rows}


def applied_userids(database_url: str) -> set[int]:
    """The user ids in the customers table."""
    return {r.userid for r in query(database_url, "SELECT userid FROM customers")}


class WorkerRun:
    """``ddbcdc worker`` as a subprocess in its own process group, its stderr in a file."""

    def __init__(self, env: Mapping[str, str], log_path: Path, *args: str) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        argv = [sys.executable, "-m", "ddbcdc.cli", "--log-level", "INFO", "worker"]
        self.proc = subprocess.Popen(
            [*argv, "--metrics-port", str(free_port()), *args],
            env=dict(env),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            start_new_session=True,
        )

    def log(self) -> str:
        """Everything the worker logged so far."""
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 60) -> str:
        """The last lines of the log."""
        return "\n".join(self.log().splitlines()[-lines:])

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float) -> float:
        """Poll ``check`` until true; fail with the log's tail if the worker exits or time
        runs out. Returns the seconds it took."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if check():
                return time.monotonic() - started
            if self.proc.poll() is not None:
                pytest.fail(f"worker exited ({self.proc.returncode}):\n{self.tail()}")
            time.sleep(1.0)
        pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{self.tail()}")

    def stop(self, timeout: float = 90.0) -> int:
        """SIGTERM (every shard checkpoints), then wait; SIGKILL the group if it hangs."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                return self.proc.wait(timeout=30)
        finally:
            self._log.close()
