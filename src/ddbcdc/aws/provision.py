"""Creating and removing what the pipeline reads from: the Kinesis stream and the source table.

:func:`set_up` is idempotent: every step first looks at what exists and only creates or changes
what is missing, and reports each step as a :class:`Step` saying which it was.

Against AWS the table's Kinesis streaming destination is enabled (with microsecond
ApproximateCreationDateTime). Against the local stack, which cannot do that, the table gets a
DynamoDB Stream (NEW_AND_OLD_IMAGES) and the tag :data:`LOCAL_DESTINATION_TAG` naming the Kinesis
stream's ARN; the local bridge forwards the changes of every table so tagged.

With ``source="dynamodb-streams"`` there is no Kinesis stream: the table's own DynamoDB stream
is enabled (NEW_AND_OLD_IMAGES). A stream of another view type is replaced on the local stack
only; against AWS that would cut off its other readers, so it is refused.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from botocore.exceptions import ClientError

from ddbcdc.errors import ConfigurationError, RetryableError
from ddbcdc.load.plan import KEY_ATTRIBUTE
from ddbcdc.settings import Settings

__all__ = [
    "DEFAULT_STREAM_NAME",
    "LOCAL_DESTINATION_TAG",
    "ProvisionOptions",
    "SetupResult",
    "Step",
    "is_local",
    "set_up",
    "tear_down",
]

logger = logging.getLogger(__name__)

DEFAULT_STREAM_NAME = "ddbcdc-customers"
LOCAL_DESTINATION_TAG = "ddbcdc:local-kinesis-destination"
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_LIVE_DESTINATION = {"ACTIVE", "ENABLING", "UPDATING"}

Action = Literal["created", "existed", "enabled", "updated", "removed", "missing"]


@dataclass(frozen=True, slots=True)
class Step:
    """One thing set up or torn down, and what happened to it."""

    resource: str  # "stream", "table", "destination", "dynamodb-stream", "tag"
    name: str
    action: Action
    detail: str = ""

    def __str__(self) -> str:
        text = f"{self.resource} {self.name}: {self.action}"
        return f"{text} ({self.detail})" if self.detail else text


@dataclass(frozen=True, slots=True)
class ProvisionOptions:
    """What to set up or tear down.

    Attributes:
        table: the source DynamoDB table (key ``userid`` N, on-demand).
        stream: the Kinesis stream name.
        shards: shard count when the stream is created.
        local: wire the local bridge (stream + tag) instead of the managed destination.
        timeout: seconds to wait for any resource to become ACTIVE or go away.
        source: ``kinesis``, or ``dynamodb-streams`` (the table's own stream, no Kinesis).
    """

    table: str = "customers"
    stream: str = DEFAULT_STREAM_NAME
    shards: int = 2
    local: bool = False
    timeout: float = 300.0
    source: Literal["kinesis", "dynamodb-streams"] = "kinesis"

    def __post_init__(self) -> None:
        if self.shards < 1:
            raise ConfigurationError(f"shards must be >= 1, got {self.shards}")


@dataclass(frozen=True, slots=True)
class SetupResult:
    """What exists after :func:`set_up`."""

    stream_name: str
    stream_arn: str
    table_name: str
    table_arn: str
    mode: Literal["local", "managed", "dynamodb-streams"]
    steps: tuple[Step, ...]


def is_local(settings: Settings) -> bool:
    """True when the DynamoDB endpoint is on this machine's loopback (the local stack)."""
    if not settings.dynamodb_endpoint:
        return False
    return urlsplit(settings.dynamodb_endpoint).hostname in _LOOPBACK


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _wait(
    what: str, check: Callable[[], bool], timeout: float, sleep: Callable[[float], None]
) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.05
    while not check():
        if time.monotonic() > deadline:
            raise RetryableError(f"timed out after {timeout:.0f}s waiting for {what}")
        sleep(delay)
        delay = min(delay * 2, 2.0)


class _Provisioner:
    def __init__(
        self,
        dynamodb: Any,
        kinesis: Any,
        options: ProvisionOptions,
        on_step: Callable[[Step], None] | None,
        sleep: Callable[[float], None],
    ) -> None:
        self.dynamodb = dynamodb
        self.kinesis = kinesis
        self.options = options
        self.steps: list[Step] = []
        self.on_step = on_step
        self.sleep = sleep

    def report(self, resource: str, name: str, action: Action, detail: str = "") -> None:
        step = Step(resource, name, action, detail)
        logger.info("%s", step)
        self.steps.append(step)
        if self.on_step is not None:
            self.on_step(step)

    # -- Kinesis stream ---------------------------------------------------------------------

    def describe_stream(self) -> dict[str, Any] | None:
        try:
            summary: dict[str, Any] = self.kinesis.describe_stream_summary(
                StreamName=self.options.stream
            )["StreamDescriptionSummary"]
        except ClientError as exc:
            if _code(exc) == "ResourceNotFoundException":
                return None
            raise
        return summary

    def ensure_stream(self) -> str:
        name = self.options.stream
        summary = self.describe_stream()
        if summary is not None and summary["StreamStatus"] == "DELETING":
            _wait(
                f"stream {name} to finish deleting",
                lambda: self.describe_stream() is None,
                self.options.timeout,
                self.sleep,
            )
            summary = None
        if summary is None:
            self.kinesis.create_stream(StreamName=name, ShardCount=self.options.shards)
            self.report("stream", name, "created", f"{self.options.shards} shards")
        else:
            shards = summary.get("OpenShardCount")
            self.report("stream", name, "existed", f"{shards} open shards")
        summary = self.wait_stream_active()
        return str(summary["StreamARN"])

    def wait_stream_active(self) -> dict[str, Any]:
        found: dict[str, Any] = {}

        def active() -> bool:
            found["summary"] = self.describe_stream()
            return found["summary"] is not None and found["summary"]["StreamStatus"] == "ACTIVE"

        _wait(
            f"stream {self.options.stream} to become ACTIVE",
            active,
            self.options.timeout,
            self.sleep,
        )
        return dict(found["summary"])

    # -- DynamoDB table ---------------------------------------------------------------------

    def describe_table(self) -> dict[str, Any] | None:
        try:
            table: dict[str, Any] = self.dynamodb.describe_table(TableName=self.options.table)[
                "Table"
            ]
        except ClientError as exc:
            if _code(exc) == "ResourceNotFoundException":
                return None
            raise
        return table

    def wait_table(self, *, gone: bool = False) -> dict[str, Any]:
        found: dict[str, Any] = {}

        def ready() -> bool:
            found["table"] = self.describe_table()
            if gone:
                return found["table"] is None
            return found["table"] is not None and found["table"]["TableStatus"] == "ACTIVE"

        state = "be deleted" if gone else "become ACTIVE"
        _wait(f"table {self.options.table} to {state}", ready, self.options.timeout, self.sleep)
        return dict(found["table"] or {})

    def ensure_table(self) -> dict[str, Any]:
        name = self.options.table
        table = self.describe_table()
        if table is not None and table["TableStatus"] == "DELETING":
            self.wait_table(gone=True)
            table = None
        if table is None:
            self.dynamodb.create_table(
                TableName=name,
                KeySchema=[{"AttributeName": KEY_ATTRIBUTE, "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": KEY_ATTRIBUTE, "AttributeType": "N"}],
                BillingMode="PAY_PER_REQUEST",
            )
            self.report("table", name, "created", f"key {KEY_ATTRIBUTE} N, on-demand")
        else:
            keys = ", ".join(k["AttributeName"] for k in table.get("KeySchema", []))
            detail = f"key {keys}"
            if keys != KEY_ATTRIBUTE:
                detail += f"; expected {KEY_ATTRIBUTE}: the loader will not fit this table"
            self.report("table", name, "existed", detail)
        return self.wait_table()

    # -- managed Kinesis streaming destination ----------------------------------------------

    def destinations(self) -> list[dict[str, Any]]:
        response = self.dynamodb.describe_kinesis_streaming_destination(
            TableName=self.options.table
        )
        return list(response.get("KinesisDataStreamDestinations", []))

    def destination(self, stream_arn: str) -> dict[str, Any] | None:
        return next((d for d in self.destinations() if d["StreamArn"] == stream_arn), None)

    def wait_destination(self, stream_arn: str, settled: set[str]) -> dict[str, Any] | None:
        found: dict[str, Any] = {}

        def done() -> bool:
            found["destination"] = self.destination(stream_arn)
            current = found["destination"]
            return current is None or current["DestinationStatus"] in settled

        _wait(
            f"the Kinesis destination of table {self.options.table}",
            done,
            self.options.timeout,
            self.sleep,
        )
        destination: dict[str, Any] | None = found["destination"]
        return destination

    def ensure_destination(self, stream_arn: str) -> None:
        current = self.destination(stream_arn)
        if current is not None and current["DestinationStatus"] in _LIVE_DESTINATION:
            current = self.wait_destination(stream_arn, {"ACTIVE"}) or current
            precision = current.get("ApproximateCreationDateTimePrecision", "MILLISECOND")
            if precision == "MICROSECOND":
                self.report("destination", stream_arn, "existed", "precision MICROSECOND")
                return
            self.dynamodb.update_kinesis_streaming_destination(
                TableName=self.options.table,
                StreamArn=stream_arn,
                UpdateKinesisStreamingConfiguration=_MICROSECOND,
            )
            self.report(
                "destination", stream_arn, "updated", f"precision {precision} -> MICROSECOND"
            )
        else:
            self.report("destination", stream_arn, "enabled", self.enable_destination(stream_arn))
        final = self.wait_destination(stream_arn, {"ACTIVE", "ENABLE_FAILED", "DISABLED"})
        if final is None or final["DestinationStatus"] != "ACTIVE":
            reason = (final or {}).get("DestinationStatusDescription", "no reason given")
            raise ConfigurationError(f"enabling the Kinesis destination failed: {reason}")

    def enable_destination(self, stream_arn: str) -> str:
        try:
            self.dynamodb.enable_kinesis_streaming_destination(
                TableName=self.options.table,
                StreamArn=stream_arn,
                EnableKinesisStreamingConfiguration=_MICROSECOND,
            )
        except ClientError as exc:
            if _code(exc) != "ValidationException" or "Precision" not in str(exc):
                raise
            # Older endpoints know no precision setting: millisecond timestamps then.
            self.dynamodb.enable_kinesis_streaming_destination(
                TableName=self.options.table, StreamArn=stream_arn
            )
            return "precision MILLISECOND: this endpoint refused MICROSECOND"
        return "precision MICROSECOND"

    # -- local bridge wiring ----------------------------------------------------------------

    def ensure_dynamodb_stream(self, table: dict[str, Any]) -> dict[str, Any]:
        spec = table.get("StreamSpecification") or {}
        name = self.options.table
        if spec.get("StreamEnabled") and spec.get("StreamViewType") == "NEW_AND_OLD_IMAGES":
            self.report("dynamodb-stream", name, "existed", "NEW_AND_OLD_IMAGES")
            return table
        if spec.get("StreamEnabled") and not self.options.local:
            raise ConfigurationError(
                f"table {name} streams {spec.get('StreamViewType')}; ddbcdc needs "
                "NEW_AND_OLD_IMAGES, and changing it replaces the stream (its other readers "
                "lose their place): change it yourself if that is acceptable"
            )
        if spec.get("StreamEnabled"):  # the view type can only change by re-enabling
            self.dynamodb.update_table(TableName=name, StreamSpecification={"StreamEnabled": False})
            self.wait_table()
        self.dynamodb.update_table(
            TableName=name,
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
        self.report("dynamodb-stream", name, "enabled", "NEW_AND_OLD_IMAGES")
        return self.wait_table()

    def tags(self, table_arn: str) -> dict[str, str]:
        tags: dict[str, str] = {}
        kwargs: dict[str, Any] = {"ResourceArn": table_arn}
        while True:
            page = self.dynamodb.list_tags_of_resource(**kwargs)
            tags.update({t["Key"]: t["Value"] for t in page.get("Tags", [])})
            if not page.get("NextToken"):
                return tags
            kwargs["NextToken"] = page["NextToken"]

    def ensure_tag(self, table_arn: str, stream_arn: str) -> None:
        previous = self.tags(table_arn).get(LOCAL_DESTINATION_TAG)
        if previous == stream_arn:
            self.report("tag", LOCAL_DESTINATION_TAG, "existed", stream_arn)
            return
        self.dynamodb.tag_resource(
            ResourceArn=table_arn, Tags=[{"Key": LOCAL_DESTINATION_TAG, "Value": stream_arn}]
        )
        if previous is None:
            self.report("tag", LOCAL_DESTINATION_TAG, "created", stream_arn)
        else:
            self.report("tag", LOCAL_DESTINATION_TAG, "updated", f"{previous} -> {stream_arn}")

    # -- teardown ---------------------------------------------------------------------------

    def unwire(self, table: dict[str, Any]) -> None:
        if self.options.source == "dynamodb-streams":
            return  # the table's stream goes with the table
        if self.options.local:
            arn = table["TableArn"]
            if LOCAL_DESTINATION_TAG in self.tags(arn):
                self.dynamodb.untag_resource(ResourceArn=arn, TagKeys=[LOCAL_DESTINATION_TAG])
                self.report("tag", LOCAL_DESTINATION_TAG, "removed")
            else:
                self.report("tag", LOCAL_DESTINATION_TAG, "missing")
            return
        suffix = f":stream/{self.options.stream}"
        live = [d for d in self.destinations() if d["StreamArn"].endswith(suffix)]
        live = [d for d in live if d["DestinationStatus"] in _LIVE_DESTINATION]
        if not live:
            self.report("destination", self.options.stream, "missing")
        for destination in live:
            arn = destination["StreamArn"]
            self.wait_destination(arn, {"ACTIVE", "DISABLED", "ENABLE_FAILED"})
            self.dynamodb.disable_kinesis_streaming_destination(
                TableName=self.options.table, StreamArn=arn
            )
            self.wait_destination(arn, {"DISABLED", "ENABLE_FAILED"})
            self.report("destination", arn, "removed")

    def remove_table(self) -> None:
        table = self.describe_table()
        if table is None:
            self.report("table", self.options.table, "missing")
            return
        if table["TableStatus"] != "DELETING":
            self.unwire(self.wait_table())
            self.dynamodb.delete_table(TableName=self.options.table)
        self.wait_table(gone=True)
        self.report("table", self.options.table, "removed")

    def remove_stream(self) -> None:
        summary = self.describe_stream()
        if summary is None:
            self.report("stream", self.options.stream, "missing")
            return
        if summary["StreamStatus"] != "DELETING":
            self.kinesis.delete_stream(StreamName=self.options.stream, EnforceConsumerDeletion=True)
        _wait(
            f"stream {self.options.stream} to be deleted",
            lambda: self.describe_stream() is None,
            self.options.timeout,
            self.sleep,
        )
        self.report("stream", self.options.stream, "removed")


_MICROSECOND = {"ApproximateCreationDateTimePrecision": "MICROSECOND"}


def set_up(
    dynamodb: Any,
    kinesis: Any,
    options: ProvisionOptions,
    *,
    on_step: Callable[[Step], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> SetupResult:
    """Create whatever is missing of stream, table and the wiring between them.

    Args:
        dynamodb: a boto3 DynamoDB client.
        kinesis: a boto3 Kinesis client.
        options: names, shard count, local or managed wiring.
        on_step: called with each :class:`Step` as it completes (created vs existed).
        sleep: how to wait between status polls.

    Raises:
        ConfigurationError: the managed destination could not be enabled.
        RetryableError: a resource did not become ACTIVE within ``options.timeout``.
    """
    provisioner = _Provisioner(dynamodb, kinesis, options, on_step, sleep)
    if options.source == "dynamodb-streams":
        table = provisioner.ensure_dynamodb_stream(provisioner.ensure_table())
        return SetupResult(
            stream_name="",
            stream_arn=str(table["LatestStreamArn"]),
            table_name=options.table,
            table_arn=str(table["TableArn"]),
            mode="dynamodb-streams",
            steps=tuple(provisioner.steps),
        )
    stream_arn = provisioner.ensure_stream()
    table = provisioner.ensure_table()
    if options.local:
        table = provisioner.ensure_dynamodb_stream(table)
        provisioner.ensure_tag(table["TableArn"], stream_arn)
    else:
        provisioner.ensure_destination(stream_arn)
    return SetupResult(
        stream_name=options.stream,
        stream_arn=stream_arn,
        table_name=options.table,
        table_arn=str(table["TableArn"]),
        mode="local" if options.local else "managed",
        steps=tuple(provisioner.steps),
    )


def tear_down(
    dynamodb: Any,
    kinesis: Any,
    options: ProvisionOptions,
    *,
    on_step: Callable[[Step], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[Step, ...]:
    """Remove the wiring, the table and the stream; whatever is missing is reported as such.

    Returns:
        The steps, in order: wiring (tag or destination), table, stream.
    """
    provisioner = _Provisioner(dynamodb, kinesis, options, on_step, sleep)
    provisioner.remove_table()
    if options.source == "kinesis":
        provisioner.remove_stream()
    return tuple(provisioner.steps)
