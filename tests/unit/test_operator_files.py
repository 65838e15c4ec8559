"""The Grafana dashboard and the Prometheus alert rules name only metrics the worker exports.

The exported names come from the real exporter: a shard processor process (the real
``ShardProcessor``, in multiprocess mode, driven through the KCL protocol) applies a batch
after a database retry, dead-letters a record, has a checkpoint throttled and its lease lost,
and stays alive while ``MetricsServer`` (with the stall monitor, as ``ddbcdc worker`` serves
it) answers ``/metrics``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ddbcdc.worker.lineage import LineageWatch
from ddbcdc.worker.liveness import LeaseWatcher, StallMonitor
from ddbcdc.worker.serving import MetricsServer, processor_calls

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "ddbcdc.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
SHARD = "shardId-000000000001"

PROCESSOR = textwrap.dedent(
    """
    import base64, sys, time
    from pathlib import Path
    import sqlalchemy as sa
    from amazon_kclpy import kcl
    sys.path.insert(0, sys.argv[1])
    from change_records import record
    from multilang_fake import Discard, FakeDaemon, initialize
    from ddbcdc.errors import DatabaseUnavailableError
    from ddbcdc.pipeline import BatchResult, Pipeline
    from ddbcdc.schema.mapping import load_mappings
    from ddbcdc.worker.processor import Backoff, ShardProcessor

    mappings = load_mappings(Path(sys.argv[2]))
    real = Pipeline(engine=sa.create_engine("postgresql+psycopg://unused/none"), mappings=mappings)

    class OnceDown:
        failed = False

        def process(self, records, *, position=None):
            if not self.failed:
                self.failed = True
                raise DatabaseUnavailableError("connection refused")
            reasons = {("customers", "phone", "S where numeric expected"): 1}
            batch = real.prepare(records)
            return BatchResult(len(records), len(records) - 1, 0, 0, 1, reasons, batch)

        def end_shard(self, application, shard_id):
            pass

        def check_mappings(self):
            pass

    now_us = int(time.time() * 1_000_000)
    changes = [record("INSERT", {"userid": i}, now_us - 1_000_000, eid=f"e{i}") for i in (1, 2)]
    batch = {
        "action": "processRecords",
        "millisBehindLatest": 0,
        "records": [
            {
                "action": "record",
                "data": base64.b64encode(data).decode(),
                "partitionKey": f"pk{seq}",
                "sequenceNumber": str(seq),
                "subSequenceNumber": None,
                "approximateArrivalTimestamp": now_us // 1000,
            }
            for seq, data in enumerate(changes, 100)
        ],
    }
    daemon = FakeDaemon(
        [initialize(sys.argv[3]), batch], ["ThrottlingException", "ShutdownException"]
    )
    processor = ShardProcessor(
        OnceDown(), application="app", apply_backoff=Backoff(0.01, 0.01),
        checkpoint_backoff=Backoff(0.01, 0.01),
    )
    kcl.KCLProcess(processor, input_file=daemon, output_file=daemon, error_file=Discard()).run()
    print("ready", flush=True)
    time.sleep(120)
    """
)


@pytest.fixture
def exported(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Every metric family the worker's /metrics serves: name -> type."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    argv = [sys.executable, "-c", PROCESSOR, str(ROOT / "tests"), str(ROOT / "schemas" / "tables")]
    processor = subprocess.Popen([*argv, SHARD], env=env, stdout=subprocess.PIPE, text=True)
    lease = {"leaseKey": {"S": SHARD}, "leaseOwner": {"S": "w"}, "checkpoint": {"S": "100"}}
    watcher = LeaseWatcher(lambda: [lease], "w")
    monitor = StallMonitor(watcher, lambda: processor_calls(tmp_path), stall_after_s=60)
    lineage = LineageWatch(list)  # a DynamoDB Streams worker's
    server = MetricsServer(
        multiproc_dir=tmp_path,
        host="127.0.0.1",
        port=0,
        problems=list,
        collectors=[monitor, lineage],
    )
    try:
        assert processor.stdout is not None
        assert processor.stdout.readline() == "ready\n", "the processor failed"
        watcher.refresh()
        server.start()
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = response.read().decode()
        yield dict(re.findall(r"^# TYPE (\S+) (\S+)$", body, flags=re.MULTILINE))
    finally:
        server.stop()
        processor.kill()
        processor.communicate(timeout=30)


def series_names(families: dict[str, str]) -> set[str]:
    """The series names a query may use: histograms have _bucket, _sum and _count."""
    names = set()
    for name, kind in families.items():
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif kind == "counter":
            names |= {name if name.endswith("_total") else f"{name}_total"}
        else:
            names.add(name)
    return names


def referenced(expressions: list[str]) -> set[str]:
    return {m for e in expressions for m in re.findall(r"\bddbcdc_[a-z0-9_]+", e)}


def dashboard_expressions() -> list[str]:
    document = json.loads(DASHBOARD.read_text())
    found = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("expr", "definition") and isinstance(value, str):
                    found.append(value)
                elif key == "query" and isinstance(value, dict | str):
                    walk({"expr": value} if isinstance(value, str) else value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(document)
    return found


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_every_metric_the_operator_files_use_is_exported(exported: dict[str, str]) -> None:
    available = series_names(exported)
    assert "ddbcdc_worker_arrival_to_commit_seconds_bucket" in available  # a real scrape
    used_by_dashboard = referenced(dashboard_expressions())
    used_by_alerts = referenced([rule["expr"] for rule in alert_rules()])
    assert len(used_by_dashboard) >= 10 and len(used_by_alerts) >= 4
    assert used_by_dashboard - available == set()
    assert used_by_alerts - available == set()
    # every family the processors and the monitor export is on the dashboard
    assert {n for n in available if not n.endswith(("_sum", "_count"))} - used_by_dashboard - {
        "ddbcdc_worker_last_activity_timestamp_seconds",  # shown as its age, per held shard
        "ddbcdc_worker_in_call",  # shown as ddbcdc_worker_shard_busy
    } == set()


def test_the_alert_rules_cover_what_an_operator_must_hear_about() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    wanted = {
        "DdbcdcShardStalled": "ddbcdc_worker_shard_stalled",
        "DdbcdcFreshnessP99High": "ddbcdc_worker_arrival_to_commit_seconds_bucket",
        "DdbcdcDeadLettersRising": "ddbcdc_worker_dead_letter_reasons_total",
        "DdbcdcDatabaseUnavailable": 'ddbcdc_worker_apply_retries_total{reason="database"}',
        "DdbcdcShardLineageDisorder": "ddbcdc_worker_lineage_disorder",
    }
    for name, metric in wanted.items():
        assert metric in rules[name]["expr"], name
    for rule in rules.values():
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["annotations"]["summary"]
