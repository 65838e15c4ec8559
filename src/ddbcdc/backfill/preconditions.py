"""What must hold before a backfill starts, checked rather than hoped for.

A snapshot or an import writes rows as of a moment; every change made after that moment must
reach PostgreSQL through the stream. So, before it starts:

- **the stream gets the table's changes**: the table's Kinesis streaming destination is
  ACTIVE for the configured stream (on the local stack: its DynamoDB Stream and the bridge's
  tag); with DynamoDB Streams, the table's stream is enabled, NEW_AND_OLD_IMAGES, and the
  one the worker reads;
- **the worker reads from before the start**: every open shard's KCL lease has a checkpoint
  (a sequence number, TRIM_HORIZON, SHARD_END; not LATEST, which a restart before the first
  record would re-resolve to a later point), and a shard without a lease will start at the
  configured initial position, which must be TRIM_HORIZON. AT_TIMESTAMP, in a lease (KCL
  keeps only the word there and reads from the worker's configured time) or for a shard
  without one, is accepted only with a configured time at or before the backfill's hold
  version: the rows are as of that version, so a change made between the two would reach
  PostgreSQL from neither;
- **the stream keeps changes long enough**: its retention (RetentionPeriodHours; 24 h for a
  DynamoDB stream) against the expected duration, or the age of an export: a warning with
  the numbers;
- **the clocks agree**: this machine's clock against DynamoDB's (the HTTP Date header) within
  the clock-skew margin the versions are computed with, less the stream's timestamp
  resolution (a DynamoDB stream's whole seconds take one second of it).

Each check returns a :class:`Finding`; the caller refuses to start on a failure unless told
to go ahead (``--force``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import sqlalchemy as sa

from ddbcdc.aws.errors import AwsError, AwsNotFoundError
from ddbcdc.aws.provision import is_local
from ddbcdc.aws.streams import Stream
from ddbcdc.aws.wiring import LOCAL_DESTINATION_TAG
from ddbcdc.backfill.records import format_us, now_us
from ddbcdc.schema.bookkeeping import shard_progress
from ddbcdc.settings import Settings

__all__ = ["Finding", "check_backfill", "report", "retention_hours"]

log = logging.getLogger(__name__)

Level = Literal["ok", "warn", "fail"]
_GOOD_CHECKPOINTS = {"TRIM_HORIZON", "SHARD_END"}


@dataclass(frozen=True, slots=True)
class Finding:
    """One check's outcome: ``ok``, ``warn`` (goes ahead) or ``fail`` (refuses)."""

    level: Level
    check: str
    message: str


def retention_hours(stream: Stream | None) -> float | None:
    """How long the stream keeps a record, None when it cannot be told."""
    if stream is None:
        return None
    try:
        return stream.retention_hours()
    except AwsError:
        return None


def _table_stream(table: dict[str, Any], stream_arn: str) -> Finding:
    """A DynamoDB stream: enabled, NEW_AND_OLD_IMAGES, and the table's latest."""
    name = table["TableName"]
    spec = table.get("StreamSpecification") or {}
    if not spec.get("StreamEnabled"):
        return Finding(
            "fail",
            "destination",
            f"table {name} has no DynamoDB stream enabled (run `ddbcdc setup`): changes made "
            "during the backfill would never reach PostgreSQL",
        )
    if spec.get("StreamViewType") != "NEW_AND_OLD_IMAGES":
        return Finding(
            "fail",
            "destination",
            f"table {name}'s stream is {spec.get('StreamViewType')}, not NEW_AND_OLD_IMAGES: "
            "its records do not carry the items",
        )
    latest = table.get("LatestStreamArn")
    if latest != stream_arn:
        return Finding(
            "fail",
            "destination",
            f"the worker reads {stream_arn} but table {name}'s stream is now {latest}: changes "
            "made during the backfill go to the newer stream",
        )
    return Finding("ok", "destination", f"{name} streams NEW_AND_OLD_IMAGES to {stream_arn}")


def _destination(
    settings: Settings, dynamodb: Any, table: dict[str, Any], stream_arn: str
) -> Finding:
    name = table["TableName"]
    if is_local(settings):
        spec = table.get("StreamSpecification") or {}
        tags = dynamodb.list_tags_of_resource(ResourceArn=table["TableArn"]).get("Tags", [])
        tagged = {t["Key"]: t["Value"] for t in tags}.get(LOCAL_DESTINATION_TAG)
        if spec.get("StreamEnabled") and tagged == stream_arn:
            return Finding("ok", "destination", f"local bridge feeds {stream_arn} from {name}")
        return Finding(
            "fail",
            "destination",
            f"table {name} is not wired to {stream_arn} (run `ddbcdc setup`): changes made "
            "during the backfill would never reach PostgreSQL",
        )
    response = dynamodb.describe_kinesis_streaming_destination(TableName=name)
    for destination in response.get("KinesisDataStreamDestinations", []):
        if destination.get("StreamArn") == stream_arn:
            status = destination.get("DestinationStatus")
            if status == "ACTIVE":
                return Finding("ok", "destination", f"{name} streams to {stream_arn}")
            return Finding("fail", "destination", f"destination {stream_arn} is {status}")
    return Finding(
        "fail",
        "destination",
        f"table {name} has no Kinesis streaming destination {stream_arn} (run `ddbcdc "
        "setup`): changes made during the backfill would never reach PostgreSQL",
    )


def _retention(hours: float, expected_seconds: float | None, oldest_us: int | None) -> Finding:
    if oldest_us is not None:
        age_h = (now_us() - oldest_us) / 3.6e9
        if age_h >= hours:
            return Finding(
                "warn",
                "retention",
                f"the export is {age_h:.1f} h old and the stream keeps {hours:g} h: changes "
                "made between them are in PostgreSQL only if the worker was consuming then",
            )
    if expected_seconds is None:
        return Finding(
            "ok",
            "retention",
            f"the stream keeps {hours:g} h (duration unknown without a rate cap: the progress "
            "line shows the ETA)",
        )
    expected_h = expected_seconds / 3600
    if expected_h >= hours * 0.8:
        return Finding(
            "warn",
            "retention",
            f"expected duration {expected_h:.1f} h is close to or beyond the stream's "
            f"retention of {hours:g} h: the worker must keep up meanwhile, or changes made "
            "during the backfill expire before it applies them (raise the rate cap or the "
            "retention)",
        )
    return Finding("ok", "retention", f"expected {expected_h:.2f} h, stream keeps {hours:g} h")


def _leases(dynamodb: Any, application: str) -> dict[str, str | None] | None:
    try:
        pages = dynamodb.get_paginator("scan").paginate(TableName=application, ConsistentRead=True)
        leases: dict[str, str | None] = {}
        for page in pages:
            for item in page.get("Items", []):
                leases[item["leaseKey"]["S"]] = item.get("checkpoint", {}).get("S")
        return leases
    except AwsNotFoundError:
        return None


def _checkpoint(leases: dict[str, str | None], shard: str) -> str | None:
    """A shard's checkpoint (lease keys are the shard id, or end with it in multi-stream)."""
    return next((c for k, c in leases.items() if k == shard or k.endswith(":" + shard)), None)


def _configured_start(settings: Settings) -> tuple[str, int | None] | Finding:
    """The worker's configured start position and its time (AT_TIMESTAMP), or why not."""
    from ddbcdc.aws.retrieval import start_position
    from ddbcdc.errors import ConfigurationError

    try:
        start = start_position(settings)
    except ConfigurationError as exc:
        return Finding("fail", "worker", f"the worker's start position: {exc}")
    return start.kind, start.timestamp_us


def _at_timestamp_finding(settings: Settings, shards: str, hold_us: int) -> Finding | None:
    """None when AT_TIMESTAMP reads from at or before ``hold_us``, else why not."""
    start = _configured_start(settings)
    if isinstance(start, Finding):
        return start
    kind, at_us = start
    # AT_TIMESTAMP reads records by their Kinesis arrival time, at or after the change.
    if kind == "AT_TIMESTAMP" and at_us is not None and at_us <= hold_us:
        return None
    if kind != "AT_TIMESTAMP" or at_us is None:
        reads = f"no time (DDBCDC_INITIAL_POSITION is {kind})"
    else:
        reads = f"{format_us(at_us)} (DDBCDC_INITIAL_POSITION_TIMESTAMP)"
    return Finding(
        "fail",
        "worker",
        f"{shards} AT_TIMESTAMP, which reads from {reads}, and the backfill's rows are as of "
        f"{format_us(hold_us)}: changes made in between would reach PostgreSQL from neither "
        "(set DDBCDC_INITIAL_POSITION_TIMESTAMP at or before that time and restart the "
        "worker, or start the backfill after it)",
    )


def _lease_finding(settings: Settings, shard: str, checkpoint: str, hold_us: int) -> Finding | None:
    application = settings.application_name
    if checkpoint == "AT_TIMESTAMP":
        where = f"shard {shard}'s lease of application {application} is at"
        return _at_timestamp_finding(settings, where, hold_us)
    if checkpoint == "LATEST":
        return Finding(
            "fail",
            "worker",
            f"shard {shard}'s lease of application {application} is at LATEST: changes before "
            "its first record may be skipped (start the worker with "
            "DDBCDC_INITIAL_POSITION=TRIM_HORIZON)",
        )
    if not (checkpoint.isdigit() or checkpoint in _GOOD_CHECKPOINTS):
        return Finding("warn", "worker", f"shard {shard}: checkpoint {checkpoint}")
    return None


def _unleased_finding(settings: Settings, unleased: list[str], hold_us: int) -> Finding:
    application = settings.application_name
    start = _configured_start(settings)
    if isinstance(start, Finding):
        return start
    position = start[0]
    if position == "AT_TIMESTAMP":
        shards = ", ".join(unleased)
        which = f"shards {shards} have no lease of {application} yet; the worker starts them at"
        refused = _at_timestamp_finding(settings, which, hold_us)
        if refused is not None:
            return refused
    if position in ("TRIM_HORIZON", "AT_TIMESTAMP"):
        return Finding(
            "ok",
            "worker",
            f"{len(unleased)} shard(s) not leased yet by {application}; the worker starts them "
            f"at {position}: start it before the stream's retention runs out",
        )
    return Finding(
        "fail",
        "worker",
        f"shards {', '.join(unleased)} have no lease of application {application} yet and the "
        f"worker would start them at {position}, after the backfill began: set "
        "DDBCDC_INITIAL_POSITION=TRIM_HORIZON",
    )


def _worker(settings: Settings, dynamodb: Any, stream: Stream, hold_us: int) -> list[Finding]:
    application = settings.application_name
    leases = _leases(dynamodb, application) or {}
    findings = []
    unleased = []
    for shard in [s.shard_id for s in stream.shards() if s.open]:
        checkpoint = _checkpoint(leases, shard)
        if checkpoint is None:
            unleased.append(shard)
            continue
        finding = _lease_finding(settings, shard, checkpoint, hold_us)
        if finding is not None:
            findings.append(finding)
    if unleased:
        findings.append(_unleased_finding(settings, unleased, hold_us))
    elif not findings:
        findings.append(
            Finding("ok", "worker", f"every open shard is checkpointed by {application}")
        )
    return findings


def _clock(response: dict[str, Any], margin_us: int, granularity_us: int = 1) -> Finding:
    """The margin must cover the clocks' offset and the stream's timestamp resolution."""
    header = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    if not header:
        return Finding("warn", "clock", "DynamoDB sent no Date header: clock skew not checked")
    server_us = int(parsedate_to_datetime(header).timestamp() * 1_000_000)
    offset_s = abs(now_us() - server_us) / 1e6
    rounding = f", and {granularity_us / 1e6:g}s for the stream's whole seconds"
    rounding = rounding if granularity_us > 1 else ""
    # The header has whole seconds: an offset below 1 s cannot be seen.
    if offset_s + 1.0 >= (margin_us - granularity_us) / 1e6:
        return Finding(
            "fail",
            "clock",
            f"this machine's clock is {offset_s:.0f}s off DynamoDB's, close to the clock-skew "
            f"margin of {margin_us / 1e6:g}s{rounding}: fix the clock or raise "
            "DDBCDC_CLOCK_SKEW_MARGIN",
        )
    return Finding("ok", "clock", f"clock within {offset_s + 1:.0f}s of DynamoDB's")


def check_backfill(
    settings: Settings,
    *,
    dynamodb: Any,
    stream: Stream | None,
    engine: sa.Engine,
    table: str,
    hold_us: int,
    expected_seconds: float | None = None,
    export_time_us: int | None = None,
) -> list[Finding]:
    """Every precondition of a backfill of ``table`` whose hold version (the lowest version
    its rows get) is ``hold_us``.

    Args:
        stream: the stream the worker reads (:func:`ddbcdc.aws.streams.open_stream`), None
            when none is configured (a failure).
    """
    described = dynamodb.describe_table(TableName=table)
    margin_us = int(settings.clock_skew_margin.total_seconds() * 1_000_000)
    granularity = stream.granularity_us if stream is not None else 1
    findings = [_clock(described, margin_us, granularity)]
    if stream is None:
        return [
            *findings,
            Finding(
                "fail",
                "stream",
                "no stream configured (DDBCDC_STREAM_NAME or DDBCDC_STREAM_ARN): needed to "
                "check that changes made during the backfill reach PostgreSQL",
            ),
        ]
    arn = stream.arn()
    if stream.kind == "dynamodb-streams":
        findings.append(_table_stream(described["Table"], arn))
    else:
        findings.append(_destination(settings, dynamodb, described["Table"], arn))
    findings.append(_retention(stream.retention_hours(), expected_seconds, export_time_us))
    findings += _worker(settings, dynamodb, stream, hold_us)
    with engine.connect() as conn:
        applied = conn.execute(
            sa.select(sa.func.count()).where(
                shard_progress.c.application == settings.application_name,
                shard_progress.c.sequence_number.is_not(None),
            )
        ).scalar()
    findings.append(
        Finding("ok", "progress", f"{applied} shard(s) with applied batches in PostgreSQL")
    )
    log.info("backfill of %s as of %s: %s", table, format_us(hold_us), findings)
    return findings


def report(findings: Sequence[Finding], *, force: bool, out: Any) -> bool:
    """Print warnings and failures; True when the backfill may start."""
    failed = False
    for finding in findings:
        if finding.level == "ok":
            continue
        failed = failed or finding.level == "fail"
        label = "warning" if finding.level == "warn" or force else "refused"
        print(f"{label} ({finding.check}): {finding.message}", file=out)
    if failed and force:
        print("going ahead anyway (--force)", file=out)
    return force or not failed
