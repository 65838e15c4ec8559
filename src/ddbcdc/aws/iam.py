"""Least-privilege IAM policies for each role that runs ddbcdc, scoped to its ARNs, pure.

Roles:

- ``worker`` (``ddbcdc worker``, on every host): reads the Kinesis stream (POLLING:
  ListShards, GetShardIterator, GetRecords; FANOUT: ListShards and SubscribeToShard through
  the registered consumer, which the KCL registers and describes unless a consumer ARN is
  given), or with DynamoDB Streams the table's stream (DescribeStream, GetShardIterator,
  GetRecords on ``table/NAME/stream/*``: a re-enabled stream gets a new label; DescribeTable
  on the table, which names its latest stream), and owns the KCL 3.x metadata tables ``<app>``
  (leases, with its ``leaseOwner`` index), ``<app>-WorkerMetricStats`` and
  ``<app>-CoordinatorState``. Plus ``cloudwatch:PutMetricData`` when the KCL's own metrics are
  on (``DDBCDC_KCL_METRICS_LEVEL``; PutMetricData has no resource-level permissions, hence
  ``*``).
- ``setup`` (``ddbcdc setup`` and ``teardown``): creates and deletes the stream and the table,
  enables the table's Time to Live (``--ttl-attribute``) and its Kinesis streaming
  destination (which needs the caller to be allowed to describe and write the stream, and
  once per account to create DynamoDB's service-linked replication role); with DynamoDB
  Streams, creates and deletes the table and enables its stream (UpdateTable), nothing of
  Kinesis.
- ``snapshot`` (reading the source table for a backfill): DescribeTable, Scan and GetItem;
  with an export bucket, also ExportTableToPointInTime/DescribeExport and S3 to write the
  export and read it back.
- ``all``: every statement of the three, for one principal that does everything.

The PostgreSQL credentials are not AWS's and appear nowhere here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ddbcdc.errors import ConfigurationError

__all__ = ["ROLES", "PolicyTarget", "Role", "policy_document", "statements"]

Role = Literal["worker", "setup", "snapshot"]
ROLES: tuple[Role, ...] = ("worker", "setup", "snapshot")
VERSION = "2012-10-17"
_ACCOUNT = re.compile(r"^\d{12}$")


@dataclass(frozen=True, slots=True)
class PolicyTarget:
    """What the policies are scoped to.

    Attributes:
        region: the AWS region of every resource.
        account: the 12-digit account id.
        stream: the Kinesis stream's name.
        table: the source DynamoDB table.
        application: the KCL application name (its metadata tables' prefix).
        retrieval_mode: ``FANOUT`` or ``POLLING``.
        consumer_name: the fan-out consumer's name (default: the application name).
        consumer_arn: a fan-out consumer given by ARN (the KCL registers nothing then).
        kcl_metrics: whether the KCL publishes its metrics to CloudWatch.
        export_bucket: the S3 bucket of table exports (snapshot role), if any.
        export_prefix: the key prefix of the exports in that bucket.
        source: ``kinesis``, or ``dynamodb-streams`` (the table's own stream; ``stream``
            is then unused).
    """

    region: str
    account: str
    stream: str
    table: str
    application: str
    retrieval_mode: str = "FANOUT"
    consumer_name: str | None = None
    consumer_arn: str | None = None
    kcl_metrics: bool = False
    export_bucket: str | None = None
    export_prefix: str = ""
    source: Literal["kinesis", "dynamodb-streams"] = "kinesis"

    def __post_init__(self) -> None:
        if not _ACCOUNT.match(self.account):
            raise ConfigurationError(f"account {self.account!r} must be a 12-digit AWS account id")
        named = ("region", "table", "application")
        for name in (*named, "stream") if self.source == "kinesis" else named:
            value = getattr(self, name)
            if not value or any(c in value for c in '*?:" '):
                raise ConfigurationError(f"{name} {value!r} cannot be part of an ARN")

    @property
    def partition(self) -> str:
        """``aws``, ``aws-cn`` or ``aws-us-gov``, from the region."""
        if self.region.startswith("cn-"):
            return "aws-cn"
        if self.region.startswith("us-gov-"):
            return "aws-us-gov"
        return "aws"

    def arn(self, service: str, resource: str, *, region: bool = True) -> str:
        """An ARN of this partition and account (``region=False`` for global services)."""
        where = self.region if region else ""
        return f"arn:{self.partition}:{service}:{where}:{self.account}:{resource}"

    @property
    def stream_arn(self) -> str:
        """The Kinesis stream's ARN."""
        return self.arn("kinesis", f"stream/{self.stream}")

    def table_arn(self, name: str) -> str:
        """A DynamoDB table's ARN."""
        return self.arn("dynamodb", f"table/{name}")

    @property
    def table_streams_arn(self) -> str:
        """Every DynamoDB stream of the source table, whatever its label."""
        return f"{self.table_arn(self.table)}/stream/*"


def _statement(sid: str, actions: Sequence[str], resources: Sequence[str]) -> dict[str, Any]:
    return {
        "Sid": sid,
        "Effect": "Allow",
        "Action": sorted(actions),
        "Resource": list(resources) if len(resources) > 1 else resources[0],
    }


def _worker_kinesis(target: PolicyTarget) -> list[dict[str, Any]]:
    if target.retrieval_mode == "POLLING":
        read = ["kinesis:ListShards", "kinesis:GetShardIterator", "kinesis:GetRecords"]
        return [_statement("KinesisPolling", read, [target.stream_arn])]
    if target.consumer_arn:
        return [
            _statement("KinesisShards", ["kinesis:ListShards"], [target.stream_arn]),
            _statement("KinesisFanOut", ["kinesis:SubscribeToShard"], [target.consumer_arn]),
        ]
    consumer = f"{target.stream_arn}/consumer/{target.consumer_name or target.application}:*"
    register = ["kinesis:ListShards", "kinesis:DescribeStreamSummary"]
    return [
        _statement(
            "KinesisStream", [*register, "kinesis:RegisterStreamConsumer"], [target.stream_arn]
        ),
        _statement(
            "KinesisFanOut",
            ["kinesis:DescribeStreamConsumer", "kinesis:SubscribeToShard"],
            [consumer],
        ),
    ]


_KCL_TABLE_ACTIONS = (
    "dynamodb:CreateTable",
    "dynamodb:DescribeTable",
    "dynamodb:Scan",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
)


def _worker_dynamodb_stream(target: PolicyTarget) -> list[dict[str, Any]]:
    read = ["dynamodb:DescribeStream", "dynamodb:GetShardIterator", "dynamodb:GetRecords"]
    return [
        _statement("DynamoDBStreamRead", read, [target.table_streams_arn]),
        _statement(
            "DynamoDBStreamOfTable", ["dynamodb:DescribeTable"], [target.table_arn(target.table)]
        ),
    ]


def _worker(target: PolicyTarget) -> list[dict[str, Any]]:
    app = target.application
    lease = target.table_arn(app)
    source = _worker_kinesis if target.source == "kinesis" else _worker_dynamodb_stream
    found = [
        *source(target),
        # UpdateTable adds the leaseOwner index to a lease table created without it.
        _statement("KclLeaseTable", [*_KCL_TABLE_ACTIONS, "dynamodb:UpdateTable"], [lease]),
        _statement("KclLeaseOwnerIndex", ["dynamodb:Query"], [f"{lease}/index/*"]),
        _statement(
            "KclWorkerMetricsAndCoordinatorState",
            _KCL_TABLE_ACTIONS,
            [
                target.table_arn(f"{app}-WorkerMetricStats"),
                target.table_arn(f"{app}-CoordinatorState"),
            ],
        ),
    ]
    if target.kcl_metrics:
        found.append(_statement("KclCloudWatchMetrics", ["cloudwatch:PutMetricData"], ["*"]))
    return found


def _setup(target: PolicyTarget) -> list[dict[str, Any]]:
    table = target.table_arn(target.table)
    if target.source == "dynamodb-streams":
        actions = [
            "dynamodb:CreateTable",
            "dynamodb:DeleteTable",
            "dynamodb:DescribeTable",
            "dynamodb:UpdateTable",
            "dynamodb:DescribeTimeToLive",
            "dynamodb:UpdateTimeToLive",
        ]
        return [_statement("SetupTableAndStream", actions, [table])]
    stream_actions = [
        "kinesis:CreateStream",
        "kinesis:DeleteStream",
        "kinesis:DescribeStream",
        "kinesis:DescribeStreamSummary",
        "kinesis:PutRecords",
    ]
    table_actions = [
        "dynamodb:CreateTable",
        "dynamodb:DeleteTable",
        "dynamodb:DescribeTable",
        "dynamodb:DescribeKinesisStreamingDestination",
        "dynamodb:DisableKinesisStreamingDestination",
        "dynamodb:EnableKinesisStreamingDestination",
        "dynamodb:UpdateKinesisStreamingDestination",
        "dynamodb:DescribeTimeToLive",
        "dynamodb:UpdateTimeToLive",
    ]
    return [
        _statement("SetupStream", stream_actions, [target.stream_arn]),
        _statement(
            "SetupStreamLookup", ["kinesis:ListStreams"], [target.arn("kinesis", "stream/*")]
        ),
        _statement("SetupTable", table_actions, [table]),
        {
            **_statement(
                "SetupKinesisReplicationRole",
                ["iam:CreateServiceLinkedRole"],
                [
                    target.arn(
                        "iam",
                        "role/aws-service-role/kinesisreplication.dynamodb.amazonaws.com/"
                        "AWSServiceRoleForDynamoDBKinesisDataStreamsReplication",
                        region=False,
                    )
                ],
            ),
            "Condition": {
                "StringEquals": {"iam:AWSServiceName": "kinesisreplication.dynamodb.amazonaws.com"}
            },
        },
    ]


def _snapshot(target: PolicyTarget) -> list[dict[str, Any]]:
    table = target.table_arn(target.table)
    read = ["dynamodb:DescribeTable", "dynamodb:Scan", "dynamodb:GetItem"]
    found = [_statement("SnapshotRead", read, [table])]
    if target.export_bucket is None:
        return found
    bucket = f"arn:{target.partition}:s3:::{target.export_bucket}"
    prefix = target.export_prefix
    export = ["dynamodb:ExportTableToPointInTime", "dynamodb:DescribeContinuousBackups"]
    objects = ["s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject", "s3:PutObjectAcl"]
    listing = _statement("SnapshotExportList", ["s3:ListBucket"], [bucket])
    if prefix:
        listing["Condition"] = {"StringLike": {"s3:prefix": [f"{prefix}*"]}}
    return [
        *found,
        _statement("SnapshotExport", export, [table]),
        _statement("SnapshotExportStatus", ["dynamodb:DescribeExport"], [f"{table}/export/*"]),
        _statement("SnapshotExportObjects", objects, [f"{bucket}/{prefix}*"]),
        listing,
    ]


_BUILDERS = {"worker": _worker, "setup": _setup, "snapshot": _snapshot}


def statements(target: PolicyTarget, role: Role) -> list[dict[str, Any]]:
    """The statements ``role`` needs on ``target``."""
    return _BUILDERS[role](target)


def policy_document(target: PolicyTarget, roles: Sequence[Role]) -> dict[str, Any]:
    """One IAM policy document with the statements of every role in ``roles``.

    Statement ids are unique across roles (``all`` merges three roles into one document).
    """
    found: list[dict[str, Any]] = []
    for role in roles:
        found.extend(statements(target, role))
    sids = [s["Sid"] for s in found]
    assert len(sids) == len(set(sids)), f"duplicate statement ids: {sids}"
    return {"Version": VERSION, "Statement": found}
