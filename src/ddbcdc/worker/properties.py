"""The KCL daemon's properties: what ``ddbcdc worker`` renders from its settings.

:class:`WorkerOptions` is the settings plus command-line overrides;
:func:`render_properties` fills ``workers/kcl.properties.template`` (package data:
:func:`ddbcdc.resources.workers_file`) with them, one validated single-line value per
property, for the MultiLangDaemon or, on a DynamoDB stream, ``StreamsDaemon``
(:mod:`ddbcdc.worker.daemon` starts either with the file).
"""

from __future__ import annotations

import re
import socket
import sys
import uuid
from dataclasses import dataclass
from datetime import datetime
from string import Template

from ddbcdc.aws.retrieval import StartPosition, check_consumer, retrieval_mode, start_position
from ddbcdc.errors import ConfigurationError
from ddbcdc.resources import workers_file
from ddbcdc.settings import Settings
from ddbcdc.worker.streams import check_source_options

__all__ = ["WorkerOptions", "new_worker_id", "render_properties"]


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """What the properties are rendered from: the settings plus command-line overrides."""

    stream: str
    application_name: str
    initial_position: str
    region: str
    max_records: int
    idle_time_ms: int
    failover_time_ms: int
    shutdown_grace_ms: int
    kinesis_endpoint: str | None = None
    dynamodb_endpoint: str | None = None
    worker_id: str | None = None
    shard_sync_interval_ms: int = 1_000
    parent_shard_poll_interval_ms: int = 10_000
    initial_timestamp: datetime | None = None  # with initial_position AT_TIMESTAMP
    retrieval_mode: str = "POLLING"
    consumer_name: str | None = None
    consumer_arn: str | None = None
    kcl_metrics_level: str = "NONE"
    source: str = "kinesis"  # or "dynamodb-streams": ``stream`` is then the stream's ARN
    dynamodbstreams_endpoint: str | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        stream: str | None = None,
        application_name: str | None = None,
        initial_position: str | None = None,
        initial_timestamp: str | None = None,
        worker_id: str | None = None,
    ) -> WorkerOptions:
        """Options from ``settings``; non-None arguments override them.

        For a DynamoDB stream (``settings.source``), ``stream`` or ``DDBCDC_STREAM_ARN`` is
        its ARN (:func:`ddbcdc.aws.streams.dynamodb_stream_arn` finds it from the table).

        Raises:
            ConfigurationError: no stream, or a start position or consumer that cannot be.
        """
        chosen = stream or settings.stream_arn or settings.stream_name
        if not chosen:
            raise ConfigurationError(
                "no Kinesis stream: pass --stream or set DDBCDC_STREAM_NAME / AWS_KINESIS_STREAM "
                "(or DDBCDC_STREAM_ARN / AWS_ARN)"
            )
        start = start_position(settings, kind=initial_position, timestamp=initial_timestamp)
        if settings.source == "dynamodb-streams":
            mode = check_source_options(settings, chosen, start.kind)
        else:
            mode = retrieval_mode(settings)
        check_consumer(settings, mode)
        return cls(
            stream=chosen,
            application_name=application_name or settings.application_name,
            initial_position=start.kind,
            initial_timestamp=start.timestamp,
            retrieval_mode=mode,
            consumer_name=settings.consumer_name,
            consumer_arn=settings.consumer_arn,
            kcl_metrics_level=settings.kcl_metrics_level,
            region=settings.aws_region,
            max_records=settings.max_records,
            idle_time_ms=settings.idle_time_between_reads_ms,
            failover_time_ms=settings.failover_time_ms,
            shutdown_grace_ms=settings.shutdown_grace_ms,
            kinesis_endpoint=settings.kinesis_endpoint,
            dynamodb_endpoint=settings.dynamodb_endpoint,
            worker_id=worker_id,
            source=settings.source,
            dynamodbstreams_endpoint=settings.dynamodbstreams_endpoint,
        )


def new_worker_id() -> str:
    """A worker id for a worker started without one: the host name and 8 random hex digits."""
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()) or "worker"
    return f"{host}-{uuid.uuid4().hex[:8]}"


def _property_value(name: str, value: object) -> str:
    text = str(value)
    if any(c in text for c in "\r\n"):
        raise ConfigurationError(f"property {name} must be a single line")
    return text.replace("\\", "\\\\")


def render_properties(options: WorkerOptions, *, executable: str) -> str:
    """The daemon's properties file text.

    Args:
        options: stream, application, positions, endpoints, timings.
        executable: the command the daemon runs per shard (split on spaces by the daemon).
    """
    template = Template(workers_file("kcl.properties.template").read_text())
    extra = []
    if options.source == "dynamodb-streams":
        stream_line = (
            "# A DynamoDB stream, read by StreamsDaemon through the DynamoDB Streams Kinesis "
            f"Adapter\ndynamoDBStreamsArn = {_property_value('streamArn', options.stream)}"
        )
        if options.dynamodbstreams_endpoint:
            extra.append(f"dynamoDBStreamsEndpoint = {_endpoint(options.dynamodbstreams_endpoint)}")
    elif options.stream.startswith("arn:"):
        stream_line = f"streamArn = {_property_value('streamArn', options.stream)}"
    else:
        stream_line = f"streamName = {_property_value('streamName', options.stream)}"
    if options.worker_id:
        extra.append(f"workerId = {_property_value('workerId', options.worker_id)}")
    if options.kinesis_endpoint and options.source == "kinesis":
        extra.append(f"kinesisEndpoint = {_endpoint(options.kinesis_endpoint)}")
    if options.dynamodb_endpoint:
        extra.append(f"dynamoDBEndpoint = {_endpoint(options.dynamodb_endpoint)}")
    values = {
        "executable": _property_value("executableName", executable),
        "python_version": f"{sys.version_info.major}.{sys.version_info.minor}",
        "application_name": _property_value("applicationName", options.application_name),
        "stream_line": stream_line,
        "region": _property_value("regionName", options.region),
        "initial_position_line": _initial_position_line(options),
        "retrieval_mode": options.retrieval_mode,
        "retrieval_lines": "\n".join(_retrieval_lines(options)),
        "failover_time_ms": options.failover_time_ms,
        # KCL's default is twice the failover time. A dead worker's lease is reassigned up
        # to 1.5 intervals after it expires and discovered half an interval later: at most
        # 2 s keeps failover within the failover time plus a few seconds, for a lease-table
        # scan by the leader and a lease query by each worker every second or two.
        "lease_assignment_interval_ms": min(2000, max(1000, options.failover_time_ms // 2)),
        # The leader treats a worker as alive until it misses two reports; KCL's 30 s default
        # keeps a dead worker's expired leases unassigned for a minute.
        "worker_metrics_reporter_ms": options.failover_time_ms,
        "shard_sync_interval_ms": options.shard_sync_interval_ms,
        "parent_shard_poll_interval_ms": options.parent_shard_poll_interval_ms,
        "shutdown_grace_ms": options.shutdown_grace_ms,
        "metrics_level": _property_value("metricsLevel", options.kcl_metrics_level),
        "extra_lines": "\n".join(extra),
    }
    return template.substitute(values)


def _initial_position_line(options: WorkerOptions) -> str:
    """``initialPositionInStream``, or for AT_TIMESTAMP ``initialPositionInStreamExtended``.

    Never both: the daemon applies properties in no fixed order, and either one replaces
    the other's setting.
    """
    start = StartPosition(options.initial_position, options.initial_timestamp)  # type: ignore[arg-type]
    if start.kind != "AT_TIMESTAMP":
        return f"initialPositionInStream = {_property_value('initialPosition', start.kind)}"
    return (
        "# AT_TIMESTAMP, in whole epoch seconds (rounded down) as the KCL takes it\n"
        f"initialPositionInStreamExtended = {start.kcl_seconds}"
    )


def _retrieval_lines(options: WorkerOptions) -> list[str]:
    """The POLLING or FANOUT settings that go with ``retrievalMode``."""
    if options.retrieval_mode == "POLLING":
        return [
            f"maxRecords = {options.max_records}",
            f"idleTimeBetweenReadsInMillis = {options.idle_time_ms}",
        ]
    if options.retrieval_mode != "FANOUT":
        raise ConfigurationError(f"retrieval mode {options.retrieval_mode!r} is not FANOUT/POLLING")
    lines = []
    if options.consumer_arn:
        arn = _property_value("consumerArn", options.consumer_arn)
        lines.append(f"fanoutConfig.consumerArn = {arn}")
    if options.consumer_name:
        name = _property_value("consumerName", options.consumer_name)
        lines.append(f"fanoutConfig.consumerName = {name}")
    return lines or ["# consumer: the KCL registers one named after applicationName"]


def _endpoint(url: str) -> str:
    if not re.match(r"^https?://[^\s]+$", url):
        raise ConfigurationError(f"endpoint {url!r} must be a full http:// or https:// URL")
    return _property_value("endpoint", url)
