"""How a table's changes reach the Kinesis stream: the managed destination, or the bridge.

Against AWS the table's Kinesis streaming destination is enabled, with microsecond
ApproximateCreationDateTime (an endpoint that knows no precision setting gets milliseconds).
Against the local stack, which cannot do that, the table gets a DynamoDB Stream
(NEW_AND_OLD_IMAGES) and the tag :data:`LOCAL_DESTINATION_TAG` naming the Kinesis stream's
ARN; the local bridge (:mod:`ddbcdc.local.bridge`) forwards the changes of every table so
tagged. Both are idempotent and reported step by step (:class:`~ddbcdc.aws.resources.Step`).
"""

from __future__ import annotations

from typing import Any

from ddbcdc.aws.errors import AwsError
from ddbcdc.aws.resources import Resources, wait_for
from ddbcdc.errors import ConfigurationError

__all__ = ["LOCAL_DESTINATION_TAG", "Wiring"]

LOCAL_DESTINATION_TAG = "ddbcdc:local-kinesis-destination"
_LIVE_DESTINATION = {"ACTIVE", "ENABLING", "UPDATING"}
_MICROSECOND = {"ApproximateCreationDateTimePrecision": "MICROSECOND"}


class Wiring:
    """The wiring between the table and the stream of ``resources``."""

    def __init__(self, resources: Resources) -> None:
        self.resources = resources
        self.dynamodb = resources.dynamodb
        self.options = resources.options
        self.report = resources.report

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

        wait_for(
            f"the Kinesis destination of table {self.options.table}",
            done,
            self.options.timeout,
            self.resources.sleep,
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
        except AwsError as exc:
            if exc.code != "ValidationException" or "Precision" not in exc.aws_message:
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
        if spec.get("StreamEnabled"):
            # Locally too: moto never enables a table's stream again once disabled, so
            # replacing it would leave the table with no stream at all.
            raise ConfigurationError(
                f"table {name} streams {spec.get('StreamViewType')}; ddbcdc needs "
                "NEW_AND_OLD_IMAGES, and changing it replaces the stream (its other readers "
                "lose their place): change it yourself if that is acceptable"
            )
        self.dynamodb.update_table(
            TableName=name,
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
        self.report("dynamodb-stream", name, "enabled", "NEW_AND_OLD_IMAGES")
        return self.resources.wait_table()

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
            return  # the table's own stream goes with the table
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
