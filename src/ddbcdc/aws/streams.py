"""The change stream the worker reads: a Kinesis data stream, or a table's DynamoDB stream.

``DDBCDC_SOURCE`` chooses: ``kinesis`` (the default: the table's Kinesis streaming
destination, ``DDBCDC_STREAM_NAME`` / ``DDBCDC_STREAM_ARN``) or ``dynamodb-streams`` (the
table's own DynamoDB stream: ``DDBCDC_STREAM_ARN``, else the ``LatestStreamArn`` of
``DDBCDC_SOURCE_TABLE``). This module is the one place that knows both: which stream the
settings name, its shards and their lineage, how long it keeps records, how precise its
timestamps are, and the time of the first record after a position (what ``ddbcdc verify``
asks of an idle shard). Everything that reads the stream outside the KCL goes through
:func:`open_stream`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from ddbcdc.aws.errors import AwsError, AwsNotFoundError
from ddbcdc.decode.record import TimestampUnit, decode_record
from ddbcdc.errors import ConfigurationError, PoisonRecordError
from ddbcdc.settings import Settings

__all__ = [
    "DYNAMODB_STREAM_ARN",
    "DynamoDBStream",
    "KinesisStream",
    "ShardInfo",
    "SourceKind",
    "Stream",
    "dynamodb_stream_arn",
    "lineage_disorder",
    "open_stream",
]

SourceKind = Literal["kinesis", "dynamodb-streams"]

#: ``arn:aws:dynamodb:REGION:ACCOUNT:table/NAME/stream/LABEL`` (the adapter's own pattern).
DYNAMODB_STREAM_ARN = re.compile(
    r"^arn:aws[^:]*:dynamodb:[-a-z0-9]+:[0-9]{12}:table/[^/]+/stream/.+$"
)
#: GetRecords calls one probe may make before it gives up (an open shard may need several
#: calls to reach the part that holds records).
PROBE_CALLS = 10
#: DynamoDB keeps a stream's records 24 hours; nothing changes that.
DYNAMODB_STREAM_RETENTION_HOURS = 24.0


@dataclass(frozen=True, slots=True)
class ShardInfo:
    """One shard as the stream describes it.

    Attributes:
        shard_id: the shard's id.
        parent_ids: the shard(s) it was created from (two after a Kinesis merge).
        starting_sequence: the first sequence number it can hold.
        ending_sequence: the last one, once the shard is closed; None while it is open.
    """

    shard_id: str
    parent_ids: tuple[str, ...]
    starting_sequence: str | None
    ending_sequence: str | None

    @property
    def open(self) -> bool:
        """Whether the shard still receives records."""
        return self.ending_sequence is None


class Stream(Protocol):
    """What code outside the KCL asks of the stream."""

    kind: SourceKind
    #: The resolution of ApproximateCreationDateTime on this stream, in microseconds: a
    #: change stamped ``t`` was made in ``[t, t + granularity_us)``.
    granularity_us: int

    @property
    def label(self) -> str:
        """The stream's name or ARN, for messages."""
        ...

    def arn(self) -> str:
        """The stream's ARN."""
        ...

    def shards(self) -> list[ShardInfo]:
        """Every shard the stream still keeps, open and closed, with its lineage."""
        ...

    def retention_hours(self) -> float:
        """How long the stream keeps a record."""
        ...

    def next_change_us(
        self, shard_id: str, after: str | None, *, unit: TimestampUnit = "auto"
    ) -> int | Literal[False] | None:
        """The change time of the first record after sequence number ``after`` (from the
        shard's start when None): None when there is none, False when it could not be told
        within :data:`PROBE_CALLS` calls."""
        ...


def _shard(raw: dict[str, Any]) -> ShardInfo:
    parents = tuple(p for p in (raw.get("ParentShardId"), raw.get("AdjacentParentShardId")) if p)
    numbers = raw.get("SequenceNumberRange") or {}
    return ShardInfo(
        shard_id=str(raw["ShardId"]),
        parent_ids=parents,
        starting_sequence=numbers.get("StartingSequenceNumber"),
        ending_sequence=numbers.get("EndingSequenceNumber"),
    )


class KinesisStream:
    """A Kinesis data stream fed by the table's Kinesis streaming destination.

    Args:
        client: a boto3 Kinesis client.
        name: the stream's name, or
        arn: its ARN (one of them).
    """

    kind: SourceKind = "kinesis"
    granularity_us = 1  # `ddbcdc setup` asks for MICROSECOND precision

    def __init__(self, client: Any, *, name: str | None = None, arn: str | None = None) -> None:
        if not (name or arn):
            raise ConfigurationError("a Kinesis stream needs a name or an ARN")
        self.client = client
        self.request: dict[str, str] = {"StreamARN": arn} if arn else {"StreamName": str(name)}

    @property
    def label(self) -> str:
        return next(iter(self.request.values()))

    def _summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = self.client.describe_stream_summary(**self.request)[
            "StreamDescriptionSummary"
        ]
        return summary

    def arn(self) -> str:
        return str(self._summary()["StreamARN"])

    def retention_hours(self) -> float:
        return float(self._summary().get("RetentionPeriodHours") or 24)

    def shards(self) -> list[ShardInfo]:
        found: list[ShardInfo] = []
        request: dict[str, Any] = dict(self.request)
        while True:
            response = self.client.list_shards(**request)
            found += [_shard(s) for s in response.get("Shards", [])]
            token = response.get("NextToken")
            if not token:
                return found
            request = {"NextToken": token}

    def next_change_us(
        self, shard_id: str, after: str | None, *, unit: TimestampUnit = "auto"
    ) -> int | Literal[False] | None:
        position: dict[str, Any] = (
            {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": after}
            if after
            else {"ShardIteratorType": "TRIM_HORIZON"}
        )
        iterator = self.client.get_shard_iterator(**self.request, ShardId=shard_id, **position)[
            "ShardIterator"
        ]
        for _ in range(PROBE_CALLS):
            response = self.client.get_records(ShardIterator=iterator, Limit=1)
            records = response.get("Records", [])
            if records:
                record = records[0]
                try:
                    return decode_record(
                        record["Data"], timestamp_unit=unit
                    ).approximate_creation_us
                except PoisonRecordError:
                    return int(record["ApproximateArrivalTimestamp"].timestamp() * 1_000_000)
            iterator = response.get("NextShardIterator")
            if iterator is None or response.get("MillisBehindLatest", 0) == 0:
                return None
        return False


class DynamoDBStream:
    """A table's DynamoDB stream (read with the DynamoDB Streams API).

    Args:
        client: a boto3 DynamoDB Streams client.
        arn: the stream's ARN.
    """

    kind: SourceKind = "dynamodb-streams"
    granularity_us = 1_000_000  # ApproximateCreationDateTime is rounded down to the second

    def __init__(self, client: Any, arn: str) -> None:
        if not DYNAMODB_STREAM_ARN.match(arn):
            raise ConfigurationError(f"{arn!r} is not a DynamoDB stream ARN")
        self.client = client
        self.stream_arn = arn

    @property
    def label(self) -> str:
        return self.stream_arn

    def arn(self) -> str:
        return self.stream_arn

    def retention_hours(self) -> float:
        return DYNAMODB_STREAM_RETENTION_HOURS

    def describe(self) -> dict[str, Any]:
        """DescribeStream's StreamDescription (the first page: status, view type, keys)."""
        description: dict[str, Any] = self.client.describe_stream(StreamArn=self.stream_arn)[
            "StreamDescription"
        ]
        return description

    def check_read(self) -> None:
        """Read the stream once as the KCL will (DescribeStream, GetShardIterator and
        GetRecords on its first shard, at LATEST: no record's content is needed).

        Raises:
            AwsError: a call failed for a reason no retry cures (access denied, the stream
                missing); throttling and a shard that aged out meanwhile are no refusal.
        """
        description = self.client.describe_stream(StreamArn=self.stream_arn, Limit=1)
        shards = description["StreamDescription"].get("Shards", [])
        if not shards:
            return  # a stream just enabled: nothing to read yet
        request = {"StreamArn": self.stream_arn, "ShardId": shards[0]["ShardId"]}
        try:
            iterator = self.client.get_shard_iterator(**request, ShardIteratorType="LATEST")
            self.client.get_records(ShardIterator=iterator["ShardIterator"], Limit=1)
        except AwsNotFoundError:
            return  # the shard aged out since DescribeStream
        except AwsError as exc:
            if not exc.retryable:
                raise

    def shards(self) -> list[ShardInfo]:
        found: list[ShardInfo] = []
        request: dict[str, Any] = {"StreamArn": self.stream_arn}
        while True:
            description = self.client.describe_stream(**request)["StreamDescription"]
            found += [_shard(s) for s in description.get("Shards", [])]
            last = description.get("LastEvaluatedShardId")
            if not last:
                return found
            request["ExclusiveStartShardId"] = last

    def next_change_us(
        self, shard_id: str, after: str | None, *, unit: TimestampUnit = "auto"
    ) -> int | Literal[False] | None:
        request: dict[str, Any] = {"StreamArn": self.stream_arn, "ShardId": shard_id}
        if after:
            request |= {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": after}
        else:
            request["ShardIteratorType"] = "TRIM_HORIZON"
        try:
            iterator = self.client.get_shard_iterator(**request)["ShardIterator"]
        except AwsNotFoundError:
            return None  # the shard aged out
        except AwsError as exc:
            if exc.code == "TrimmedDataAccessException":
                return None  # the records after `after` aged out
            raise
        for _ in range(PROBE_CALLS):
            response = self.client.get_records(ShardIterator=iterator, Limit=1)
            records = response.get("Records", [])
            if records:
                return decode_record(records[0], timestamp_unit=unit).approximate_creation_us
            iterator = response.get("NextShardIterator")
            if iterator is None:
                return None  # a closed shard, read to its end
        # No MillisBehindLatest here: an open shard that answered empty pages this often is
        # taken as read to its end.
        return None


def dynamodb_stream_arn(settings: Settings, dynamodb: Any) -> str:
    """The DynamoDB stream to read: ``DDBCDC_STREAM_ARN``, else the source table's latest.

    Raises:
        ConfigurationError: the ARN given is not a DynamoDB stream's, or the table has no
            stream enabled (``ddbcdc setup`` enables it).
    """
    if settings.stream_arn:
        if not DYNAMODB_STREAM_ARN.match(settings.stream_arn):
            raise ConfigurationError(
                f"DDBCDC_STREAM_ARN {settings.stream_arn!r} is not a DynamoDB stream ARN "
                "(arn:aws:dynamodb:REGION:ACCOUNT:table/TABLE/stream/LABEL), and "
                "DDBCDC_SOURCE is dynamodb-streams"
            )
        return settings.stream_arn
    table = settings.source_table
    try:
        described = dynamodb.describe_table(TableName=table)["Table"]
    except AwsNotFoundError as exc:
        raise ConfigurationError(
            f"table {table} (DDBCDC_SOURCE_TABLE) does not exist: its DynamoDB stream "
            "cannot be read (run `ddbcdc setup`, or set DDBCDC_STREAM_ARN)"
        ) from exc
    spec = described.get("StreamSpecification") or {}
    arn = described.get("LatestStreamArn")
    if not (spec.get("StreamEnabled") and arn):
        raise ConfigurationError(
            f"table {table} has no DynamoDB stream enabled (run `ddbcdc setup` with "
            "DDBCDC_SOURCE=dynamodb-streams, or set DDBCDC_STREAM_ARN)"
        )
    return str(arn)


def open_stream(
    settings: Settings,
    *,
    dynamodb: Any | None = None,
    kinesis: Any | None = None,
    streams: Any | None = None,
) -> Stream | None:
    """The stream the settings name, None when they name none (Kinesis without a stream).

    Clients not given are made from the settings.

    Raises:
        ConfigurationError: a DynamoDB stream that cannot be found (see
            :func:`dynamodb_stream_arn`).
    """
    from ddbcdc.aws import clients

    if settings.source == "dynamodb-streams":
        arn = dynamodb_stream_arn(settings, dynamodb or clients.client("dynamodb", settings))
        return DynamoDBStream(streams or clients.client("dynamodbstreams", settings), arn)
    if not (settings.stream_arn or settings.stream_name):
        return None
    return KinesisStream(
        kinesis or clients.client("kinesis", settings),
        name=settings.stream_name,
        arn=settings.stream_arn,
    )


def lineage_disorder(shards: list[ShardInfo]) -> list[tuple[ShardInfo, ShardInfo]]:
    """The (parent, child) pairs whose sequence numbers do not grow from parent to child.

    Same-second changes of an item in a parent and a child shard are ordered by their
    sequence numbers (docs/correctness.md): that needs every child to start above where its
    parent ended. Pairs of which either end is unknown (a parent aged out, a shard still
    open) are not judged.
    """
    by_id = {s.shard_id: s for s in shards}
    wrong = []
    for child in shards:
        for parent_id in child.parent_ids:
            parent = by_id.get(parent_id)
            if parent is None or parent.ending_sequence is None or not child.starting_sequence:
                continue
            if int(child.starting_sequence) <= int(parent.ending_sequence):
                wrong.append((parent, child))
    return wrong
