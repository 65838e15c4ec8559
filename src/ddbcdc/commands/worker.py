"""``ddbcdc worker``: run the KCL worker (MultiLangDaemon + ddbcdc shard processors)."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ddbcdc.aws import clients as aws
from ddbcdc.aws.errors import AwsNotFoundError
from ddbcdc.aws.streams import DynamoDBStream, dynamodb_stream_arn
from ddbcdc.errors import ConfigurationError
from ddbcdc.settings import Settings
from ddbcdc.worker import daemon, streams
from ddbcdc.worker.leadership import release_stale_leader_lock
from ddbcdc.worker.lineage import LineageWatch
from ddbcdc.worker.liveness import LeaseWatcher, StallMonitor
from ddbcdc.worker.properties import WorkerOptions, new_worker_id, render_properties
from ddbcdc.worker.serving import MetricsServer, processor_calls
from ddbcdc.worker.shards import (
    ShardLister,
    ShardRegistry,
    dynamodb_open_shards,
    kinesis_open_shards,
    lease_shards,
)
from ddbcdc.worker.workdir import WorkDir

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    """Add the ``worker`` subcommand."""
    parser = subparsers.add_parser(
        "worker",
        help="consume the Kinesis stream into PostgreSQL (KCL worker)",
        description=(
            "Start the KCL MultiLangDaemon with one ddbcdc shard processor per leased shard "
            "(DDBCDC_SOURCE=dynamodb-streams: the table's DynamoDB stream, through the "
            "DynamoDB Streams Kinesis Adapter). "
            "Each batch is applied to PostgreSQL in one transaction, then checkpointed. "
            "SIGTERM/SIGINT stop it gracefully (every shard checkpoints first)."
        ),
    )
    parser.add_argument(
        "--stream",
        help="Kinesis stream name or ARN, or with DDBCDC_SOURCE=dynamodb-streams the DynamoDB "
        "stream's ARN (default: from settings; a DynamoDB stream: the source table's)",
    )
    parser.add_argument(
        "--application-name",
        help="KCL application name: the lease table's name and the progress key",
    )
    parser.add_argument(
        "--initial-position",
        type=str.upper,
        choices=["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"],
        help="where a shard without a checkpoint starts (default: DDBCDC_INITIAL_POSITION)",
    )
    parser.add_argument(
        "--initial-timestamp",
        metavar="TIME",
        help="for AT_TIMESTAMP (implied when given alone): ISO-8601 or epoch seconds; the "
        "first record read is the first that arrived in Kinesis at or after it",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        help="port of /metrics and /healthz (default: settings; 0 picks a free one)",
    )
    parser.add_argument(
        "--print-properties",
        action="store_true",
        help="print the rendered KCL properties and exit",
    )
    parser.add_argument(
        "--worker-id",
        help="KCL worker id, unique per running worker; give a restarted worker the same id "
        "to take its leases back at once (default: host name and a random suffix)",
    )
    parser.add_argument(
        "--prepare",
        action="store_true",
        help="DynamoDB Streams: download the adapter jar and compile the launcher into the "
        "cache (DDBCDC_CACHE_DIR), then exit (for images built where a compiler is)",
    )
    parser.add_argument("--java", help="java executable (default: $JAVA_HOME/bin/java or PATH)")
    parser.set_defaults(func=run)


def _check_mappings(settings: Settings) -> None:
    """Refuse to start with mappings other than those the tables were migrated to."""
    from ddbcdc.db import create_engine
    from ddbcdc.migrate.versions import check_engine
    from ddbcdc.schema.mapping import load_mappings

    mappings = load_mappings(settings.mappings_dir)
    engine = create_engine(settings.require_database_url(), pooled=False)
    try:
        check_engine(engine, mappings)
    finally:
        engine.dispose()


def _prepare(settings: Settings, java_option: str | None) -> int:
    java = daemon.check_java(java_option)
    jars, launcher = streams.prepare(settings, java, daemon.find_jars())
    print(f"adapter_jar={jars[-1]}\nlauncher={launcher}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Render the properties, check Java and the jars, run the daemon until it stops."""
    settings = Settings()
    if args.prepare:
        return _prepare(settings, args.java)
    stream = args.stream
    if settings.source == "dynamodb-streams" and not stream:
        stream = _table_stream(settings)
    options = WorkerOptions.from_settings(
        settings,
        stream=stream,
        application_name=args.application_name,
        initial_position=args.initial_position,
        initial_timestamp=args.initial_timestamp,
        # Always a known id: the stall monitor finds this worker's leases by it.
        worker_id=args.worker_id or new_worker_id(),
    )
    properties = render_properties(options, executable=daemon.processor_command())
    if args.print_properties:
        print(properties, end="")
        return 0
    _check_mappings(settings)
    _check_stream(settings, options)
    _release_leadership(settings, options)
    java = daemon.check_java(args.java)
    jars = daemon.find_jars()
    launcher = None
    if options.source == "dynamodb-streams":
        jars, launcher = streams.prepare(settings, java, jars)
    port = settings.metrics_port if args.metrics_port is None else args.metrics_port
    with WorkDir() as workdir:
        properties_file = workdir.path / "kcl.properties"
        properties_file.write_text(properties)
        multiproc_dir = workdir.path / "metrics"
        multiproc_dir.mkdir()
        env = daemon.daemon_environment(
            settings,
            os.environ,
            multiproc_dir=multiproc_dir,
            application_name=options.application_name,
            options=options,
        )
        process = daemon.DaemonProcess(
            daemon.daemon_command(java, jars, properties_file, launcher=launcher),
            env,
            grace_s=options.shutdown_grace_ms / 1000 + 15,
            pass_fds=(workdir.lock_fd,),
        )
        return _serve(settings, options, process, multiproc_dir, port)


def _serve(
    settings: Settings,
    options: WorkerOptions,
    process: daemon.DaemonProcess,
    multiproc_dir: Path,
    port: int,
) -> int:
    """Run the daemon with the lease watcher, the shard registry and the metrics server."""
    from ddbcdc.db import create_engine

    assert options.worker_id is not None
    leases = LeaseWatcher(_lease_scan(settings, options.application_name), options.worker_id)
    engine = create_engine(settings.require_database_url(), pool_size=1, pre_ping=True)
    registry = ShardRegistry(
        engine, options.application_name, [_open_shards(settings, options), lease_shards(leases)]
    )
    monitor = StallMonitor(
        leases,
        lambda: processor_calls(multiproc_dir),
        stall_after_s=settings.stall_after_s,
    )

    def problems() -> list[str]:
        return monitor.problems() if process.alive() else ["KCL daemon not running"]

    lineage = _lineage_watch(settings, options)
    try:
        server = MetricsServer(
            multiproc_dir=multiproc_dir,
            host=settings.metrics_host,
            port=port,
            problems=problems,
            collectors=[monitor, *([lineage] if lineage else [])],
        )
    except OSError as exc:
        raise ConfigurationError(
            f"cannot serve /metrics on {settings.metrics_host}:{port}: {exc.strerror} "
            "(DDBCDC_METRICS_PORT, --metrics-port)"
        ) from exc
    log.warning(
        "worker starting application=%s worker_id=%s stream=%s metrics=http://%s:%d/metrics",
        options.application_name,
        options.worker_id,
        options.stream,
        settings.metrics_host,
        server.port,
    )
    try:
        process.start()  # before any thread: it forks
        server.start()
        leases.start()
        registry.start()
        if lineage is not None:
            lineage.start()
        status = process.wait()
    finally:
        if lineage is not None:
            lineage.stop()
        registry.stop()
        leases.stop()
        server.stop()
        engine.dispose()
    log.warning("worker stopped application=%s status=%d", options.application_name, status)
    return status


def _table_stream(settings: Settings) -> str:
    """The source table's DynamoDB stream (DescribeTable)."""
    return dynamodb_stream_arn(settings, aws.client("dynamodb", settings, max_attempts=3))


def _check_stream(settings: Settings, options: WorkerOptions) -> None:
    """Refuse to start when the stream cannot be read (missing, denied, unreachable): the
    KCL daemon would retry that forever."""
    if options.source == "dynamodb-streams":
        client = aws.client("dynamodbstreams", settings, max_attempts=3)
        DynamoDBStream(client, options.stream).check_read()
        return
    kinesis = aws.client("kinesis", settings, max_attempts=3)
    name = "StreamARN" if options.stream.startswith("arn:") else "StreamName"
    kinesis.list_shards(**{name: options.stream}, MaxResults=1)


def _open_shards(settings: Settings, options: WorkerOptions) -> ShardLister:
    """The stream's open shards: ListShards on Kinesis, DescribeStream on a DynamoDB stream."""
    if options.source != "dynamodb-streams":
        return kinesis_open_shards(aws.client("kinesis", settings, max_attempts=3), options.stream)
    client = aws.client("dynamodbstreams", settings, max_attempts=3)
    return dynamodb_open_shards(client, options.stream)


def _lineage_watch(settings: Settings, options: WorkerOptions) -> LineageWatch | None:
    """For a DynamoDB stream: the check that its sequence numbers grow along each lineage."""
    if options.source != "dynamodb-streams":
        return None
    client = aws.client("dynamodbstreams", settings, max_attempts=3)
    return LineageWatch(DynamoDBStream(client, options.stream).shards)


def _release_leadership(settings: Settings, options: WorkerOptions) -> None:
    """Give back the leader lock an earlier run under this worker id left (see leadership).

    A start-up check too: a DynamoDB the worker cannot reach or may not read ends the start,
    as the KCL daemon could not run against it either.
    """
    assert options.worker_id is not None
    client = aws.client("dynamodb", settings, max_attempts=3)
    release_stale_leader_lock(client, options.application_name, options.worker_id)


def _lease_scan(settings: Settings, table: str) -> Callable[[], Iterator[dict[str, Any]]]:
    """A paginated Scan of the KCL lease table (the application's name)."""
    client = aws.client("dynamodb", settings, max_attempts=3)

    def scan() -> Iterator[dict[str, Any]]:
        try:
            pages = client.get_paginator("scan").paginate(TableName=table, ConsistentRead=True)
            for page in pages:
                yield from page["Items"]
        except AwsNotFoundError:
            return  # the daemon has not created it yet

    return scan
