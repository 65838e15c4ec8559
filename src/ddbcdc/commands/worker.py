"""``ddbcdc worker``: run the KCL worker (MultiLangDaemon + ddbcdc shard processors)."""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from ddbcdc.settings import Settings
from ddbcdc.worker import daemon
from ddbcdc.worker.metrics import MetricsServer

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    """Add the ``worker`` subcommand."""
    parser = subparsers.add_parser(
        "worker",
        help="consume the Kinesis stream into PostgreSQL (KCL worker)",
        description=(
            "Start the KCL MultiLangDaemon with one ddbcdc shard processor per leased shard. "
            "Each batch is applied to PostgreSQL in one transaction, then checkpointed. "
            "SIGTERM/SIGINT stop it gracefully (every shard checkpoints first)."
        ),
    )
    parser.add_argument("--stream", help="Kinesis stream name or ARN (default: from settings)")
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
        "--worker-id", help="KCL worker id, unique per running worker (default: random)"
    )
    parser.add_argument("--java", help="java executable (default: $JAVA_HOME/bin/java or PATH)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Render the properties, check Java and the jars, run the daemon until it stops."""
    settings = Settings()
    options = daemon.WorkerOptions.from_settings(
        settings,
        stream=args.stream,
        application_name=args.application_name,
        initial_position=args.initial_position,
        initial_timestamp=args.initial_timestamp,
        worker_id=args.worker_id,
    )
    properties = daemon.render_properties(options, executable=daemon.processor_command())
    if args.print_properties:
        print(properties, end="")
        return 0
    java = daemon.check_java(args.java)
    jars = daemon.find_jars()
    port = settings.metrics_port if args.metrics_port is None else args.metrics_port
    with tempfile.TemporaryDirectory(prefix="ddbcdc-worker-") as tmp:
        workdir = Path(tmp)
        properties_file = workdir / "kcl.properties"
        properties_file.write_text(properties)
        multiproc_dir = workdir / "metrics"
        multiproc_dir.mkdir()
        env = daemon.daemon_environment(
            settings,
            os.environ,
            multiproc_dir=multiproc_dir,
            application_name=options.application_name,
        )
        process = daemon.DaemonProcess(
            daemon.daemon_command(java, jars, properties_file),
            env,
            grace_s=options.shutdown_grace_ms / 1000 + 15,
        )
        server = MetricsServer(
            multiproc_dir=multiproc_dir,
            host=settings.metrics_host,
            port=port,
            healthy=process.alive,
        )
        log.warning(
            "worker starting application=%s stream=%s metrics=http://%s:%d/metrics",
            options.application_name,
            options.stream,
            settings.metrics_host,
            server.port,
        )
        try:
            process.start()  # before any thread: it forks
            server.start()
            status = process.wait()
        finally:
            server.stop()
    log.warning("worker stopped application=%s status=%d", options.application_name, status)
    return status
