"""The demo: the whole pipeline on the local stack, from DynamoDB writes to PostgreSQL rows.

Steps: start the local stack (moto, kinesis-local, PostgreSQL, the bridge; or with source
``dynamodb-streams`` moto, PostgreSQL and the DynamoDB Streams front), migrate, set up the
stream and the table (the shipped ``customers`` mapping, installed with the package, so the
demo runs from any folder, keeping what the table's Time to Live on ``expires_at`` expires),
start the KCL worker, load changes (the second half with an attribute the mapping does not
name, ``city``: it is kept in the ``attributes`` column), wait until PostgreSQL equals a Scan of
the DynamoDB table, report. Then items expire (:mod:`ddbcdc.demo.archive`: the local stack's
Time to Live sweeper runs beside its bridge or in its DynamoDB Streams front) and PostgreSQL
must keep them while still equal to the Scan; stop the worker. Then the mapping evolves
(:mod:`ddbcdc.demo.evolve`): a ``city`` column is added, ``migrate`` fills it from the kept
attributes and PostgreSQL must equal the Scan again. Before that, with the same worker,
the archive act (40 items expire under the table's Time to Live and PostgreSQL keeps them)
and the single-table act (:mod:`ddbcdc.demo.single_table`): a second table, ``shop``, holds
customers, orders and order lines, copied into a PostgreSQL table per entity by a routed
mapping. Clean up. Exit status 0 only when every comparison matches.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, TextIO

import sqlalchemy as sa

from ddbcdc.aws import clients as aws
from ddbcdc.aws.errors import AwsNotFoundError
from ddbcdc.aws.provision import ProvisionOptions, set_up
from ddbcdc.aws.resources import KEY_SCHEMAS
from ddbcdc.children import signal_when_parent_dies
from ddbcdc.db import check_reachable, create_engine
from ddbcdc.demo.archive import TTL_ATTRIBUTE, archive, archiving_mapping
from ddbcdc.demo.evolve import NEW_ATTRIBUTE, evolve, print_samples
from ddbcdc.demo.single_table import single_table_act
from ddbcdc.load.plan import Item, LoadOptions, expected_state, plan_operations
from ddbcdc.load.writer import LoadSummary, run_load
from ddbcdc.local.stack import LocalStack
from ddbcdc.migrate.run import upgrade
from ddbcdc.resources import shipped_mappings_dir, single_table_mappings_dir
from ddbcdc.schema.bookkeeping import dead_letters, shard_progress
from ddbcdc.schema.mapping import TableMapping, load_mappings
from ddbcdc.settings import Settings
from ddbcdc.verify.compare import Comparison, compare

__all__ = ["DemoOptions", "run_demo"]

log = logging.getLogger(__name__)

APPLICATION = "ddbcdc-demo"


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """How big the demo is and how long it may take."""

    changes: int = 3000
    keys: int = 500
    shards: int = 2
    rate: float = 0.0
    seed: int = 7
    timeout: float = 120.0
    database_url: str | None = None
    log_dir: Path = Path(".local/demo")
    single_table_changes: int = 1000
    single_table_customers: int = 40
    source: Literal["kinesis", "dynamodb-streams"] = "kinesis"


class _Reporter:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.started = time.monotonic()

    def step(self, text: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[{elapsed:6.1f}s] {text}", file=self.out, flush=True)


def _start_worker(
    settings_env: dict[str, str], stream: str, log_file: Path
) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings_env}
    if stream:  # a DynamoDB Streams worker reads the table's own stream
        env["DDBCDC_STREAM_NAME"] = stream
    env.update(
        DDBCDC_APPLICATION_NAME=APPLICATION,
        DDBCDC_METRICS_PORT="0",
        DDBCDC_IDLE_TIME_BETWEEN_READS_MS="200",
    )
    with log_file.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "ddbcdc.cli", "--log-level", "INFO", "worker"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # SIGTERM (a graceful stop) if the demo dies without stopping it.
            preexec_fn=signal_when_parent_dies(signal.SIGTERM),
        )


def _stop_worker(process: subprocess.Popen[bytes], grace_s: float = 40.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _wait_until(
    check: Callable[[], Comparison], *, timeout: float, worker: subprocess.Popen[bytes]
) -> tuple[Comparison, float]:
    started = time.monotonic()
    while True:
        result = check()
        waited = time.monotonic() - started
        if result.matches or waited > timeout:
            return result, waited
        if worker.poll() is not None:
            return result, waited
        time.sleep(0.5)


def _wait_for_leases(dynamodb: Any, shards: int, *, timeout: float) -> bool:
    """Wait until the KCL lease table has an owned lease for every shard."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            items = dynamodb.scan(TableName=APPLICATION, ConsistentRead=True).get("Items", [])
        except AwsNotFoundError:
            items = []
        if sum(1 for item in items if "leaseOwner" in item) >= shards:
            return True
        time.sleep(0.5)
    return False


def _bookkeeping(engine: sa.Engine) -> tuple[int, list[dict[str, Any]]]:
    with engine.connect() as conn:
        letters = conn.execute(sa.select(sa.func.count()).select_from(dead_letters)).scalar_one()
        shards = [
            dict(row)
            for row in conn.execute(
                sa.select(shard_progress).where(shard_progress.c.application == APPLICATION)
            ).mappings()
        ]
    return int(letters), shards


def _report(
    out: TextIO,
    summary: LoadSummary,
    comparison: Comparison,
    caught_up_s: float,
    letters: int,
    shards: list[dict[str, Any]],
) -> None:
    print("\nddbcdc demo report", file=out)
    print(f"  changes loaded      {summary.total_writes} {dict(summary.writes)}", file=out)
    print(f"  load rate           {summary.rate:,.0f} writes/s (seed {summary.seed})", file=out)
    print(f"  rows materialized   {comparison.target_rows}", file=out)
    print(f"  DynamoDB items      {comparison.source_items}", file=out)
    print(f"  dead letters        {letters}", file=out)
    print(f"  caught up           {caught_up_s:.1f} s after the last write", file=out)
    for shard in shards:
        print(
            f"  shard {shard['shard_id']}  records {shard['records_total']}"
            f"  batches {shard['batches_total']}"
            f"  behind {shard['millis_behind_latest']} ms",
            file=out,
        )


def run_demo(options: DemoOptions, *, out: TextIO = sys.stdout) -> int:
    """Run the demo end to end; 0 when PostgreSQL matches DynamoDB, 1 otherwise."""
    say = _Reporter(out).step
    if options.database_url:
        check_reachable(options.database_url)  # before the stack starts
    options.log_dir.mkdir(parents=True, exist_ok=True)
    streams = options.source == "dynamodb-streams"
    parts = "the DynamoDB Streams front" if streams else "kinesis-local, bridge"
    say(f"starting the local stack (moto, PostgreSQL, {parts})")
    with LocalStack(
        database_url=options.database_url,
        log_dir=options.log_dir,
        source=options.source,
        shards=options.shards,
    ) as stack:
        # The demo's own boto3 clients take the stack's credentials from the environment,
        # like any other client of it.
        os.environ.update(stack.env)
        folder = _mappings_folder(options)
        settings = stack.settings(mappings_dir=folder)
        mappings = load_mappings(settings.mappings_dir)
        mapping = next(m for m in mappings if m.source_table == "customers")
        shop = next((m for m in mappings if m.routes), None)
        engine = create_engine(stack.database_url)
        try:
            say("migrating PostgreSQL")
            upgrade(engine, mappings)
            kind = "the table's DynamoDB stream" if streams else "the Kinesis stream"
            say(f"setting up the table and {kind} ({options.shards} shards)")
            dynamodb = aws.client("dynamodb", settings)
            setup = set_up(
                dynamodb,
                aws.client("kinesis", settings),
                ProvisionOptions(
                    table=mapping.source_table,
                    shards=options.shards,
                    local=True,
                    source=options.source,
                    ttl_attribute=TTL_ATTRIBUTE,
                ),
            )
            if shop is not None:  # its changes come through the same stream
                shop_key = KEY_SCHEMAS["single-table"]
                set_up(
                    dynamodb,
                    aws.client("kinesis", settings),
                    ProvisionOptions(table=shop.source_table, key=shop_key, local=True),
                )
            say("starting the KCL worker")
            worker = _start_worker(
                {**stack.env, "DDBCDC_MAPPINGS_DIR": str(settings.mappings_dir)},
                setup.stream_name,
                options.log_dir / "worker.log",
            )
            try:
                if not _wait_for_leases(dynamodb, options.shards, timeout=options.timeout):
                    say("the worker took no leases in time; see " + str(options.log_dir))
                    return 1
                say(f"the worker holds leases on all {options.shards} shards")
                status, state = _load_and_check(
                    options, settings, engine, mapping, worker, say, out
                )
                if not status:
                    status = archive(
                        dynamodb,
                        engine,
                        mapping,
                        state,
                        seed=options.seed,
                        timeout=options.timeout,
                        say=say,
                        out=out,
                    )
                if not status and shop is not None:
                    status = single_table_act(
                        settings,
                        engine,
                        shop,
                        changes=options.single_table_changes,
                        customers=options.single_table_customers,
                        seed=options.seed,
                        timeout=options.timeout,
                        alive=lambda: worker.poll() is None,
                        say=say,
                        out=out,
                    )
            finally:
                _stop_worker(worker)
                say("worker stopped")
            if status:
                return status
            return evolve(dynamodb, engine, mapping, options.log_dir, say=say, out=out)
        finally:
            engine.dispose()


def _mappings_folder(options: DemoOptions) -> Path:
    """The worker's mappings: the shipped ``customers`` one keeping what the table's Time to
    Live expires (the archive act), and the single-table ``shop`` one unless that act is
    off. The act runs on Kinesis only: its table streams into the same Kinesis stream, and a
    worker on a DynamoDB stream reads one table's."""
    folder = options.log_dir / "mappings"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.json"):
        old.unlink()
    shipped = load_mappings(shipped_mappings_dir())
    archiving_mapping(next(m for m in shipped if m.source_table == "customers"), folder)
    if options.single_table_changes > 0 and options.source == "kinesis":
        for path in single_table_mappings_dir().glob("*.json"):
            (folder / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    return folder


def _load_and_check(
    options: DemoOptions,
    settings: Settings,
    engine: sa.Engine,
    mapping: TableMapping,
    worker: subprocess.Popen[bytes],
    say: Callable[[str], None],
    out: TextIO,
) -> tuple[int, dict[int, Item]]:
    """Load, wait, compare: (0 when PostgreSQL matches DynamoDB, the table loaded)."""
    first = LoadOptions(
        table=mapping.source_table,
        count=options.changes // 2,
        keys=options.keys,
        seed=options.seed,
        rate=options.rate,
    )
    operations = list(plan_operations(first))
    # Mid-run, the items gain an attribute the mapping does not name.
    second = replace(first, count=options.changes - first.count, new_attribute=NEW_ATTRIBUTE)
    later = plan_operations(
        replace(second, seed=first.seed + 1), existing=expected_state(operations)
    )
    operations += [replace(op, index=op.index + first.count) for op in later]
    say(
        f"loading {len(operations)} changes over {options.keys} keys; from change "
        f"{first.count + 1} on, items also get {NEW_ATTRIBUTE!r}, which the mapping does not name"
    )
    summary = run_load(
        aws.client("dynamodb", settings, max_attempts=1), second, operations=operations
    )
    say(f"loaded {summary.total_writes} changes at {summary.rate:,.0f}/s; waiting for PostgreSQL")
    dynamodb = aws.client("dynamodb", settings)
    comparison, caught_up = _wait_until(
        lambda: compare(dynamodb, engine, mapping), timeout=options.timeout, worker=worker
    )
    letters, shards = _bookkeeping(engine)
    _report(out, summary, comparison, caught_up, letters, shards)
    state = expected_state(operations)
    if comparison.matches and comparison.source_items == len(state):
        print("\nSample rows, side by side:", file=out)
        print_samples(dynamodb, engine, mapping, out)
        print("\nPostgreSQL matches DynamoDB.", file=out)
        return 0, state
    print(f"\nMISMATCH: {comparison} (worker log: {options.log_dir / 'worker.log'})", file=out)
    return 1, state
