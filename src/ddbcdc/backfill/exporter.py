"""``ddbcdc export``: ExportTableToPointInTime, wait for it, find the folder it wrote.

The export goes under a prefix of its own (``<prefix>/<table>-<UTC time>``), so the one
``AWSDynamoDB/<export id>/`` folder below it is this export's, on AWS (where the folder is
named after the export id) and on emulators alike (moto names it at random and writes no
manifests). The export's time is DescribeExport's ``ExportTime``; when the service does not
say, the time just before the request was sent (a full export reflects the table at the
moment it is requested), which is never later than the real one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ddbcdc.aws.errors import AwsError
from ddbcdc.backfill.records import now_us
from ddbcdc.errors import ConfigurationError, RetryableError

__all__ = ["ExportRequest", "RequestedExport", "request_export", "wait_for_export"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ExportRequest:
    """What to export and where.

    Attributes:
        table: the DynamoDB table.
        bucket: the S3 bucket.
        prefix: the S3 prefix; the export goes below ``<prefix>/<table>-<time>``.
        export_time_us: the point in time (None: now).
        incremental_from_us: with ``incremental_to_us``, an incremental export of that window.
        incremental_to_us: the window's end.
    """

    table: str
    bucket: str
    prefix: str = "ddbcdc-exports"
    export_time_us: int | None = None
    incremental_from_us: int | None = None
    incremental_to_us: int | None = None


@dataclass(frozen=True, slots=True)
class RequestedExport:
    """An export that was requested: its ARN, where it writes, and its time."""

    arn: str
    bucket: str
    prefix: str
    requested_us: int


def _datetime(micros: int) -> datetime:
    return datetime.fromtimestamp(micros / 1_000_000, UTC)


def request_export(dynamodb: Any, request: ExportRequest) -> RequestedExport:
    """Ask DynamoDB for the export.

    Raises:
        ConfigurationError: point-in-time recovery is off, or the table is missing.
    """
    table = dynamodb.describe_table(TableName=request.table)["Table"]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    prefix = f"{request.prefix.strip('/')}/{request.table}-{stamp}"
    params: dict[str, Any] = {
        "TableArn": table["TableArn"],
        "S3Bucket": request.bucket,
        "S3Prefix": prefix,
        "ExportFormat": "DYNAMODB_JSON",
    }
    if request.incremental_from_us is not None:
        params["ExportType"] = "INCREMENTAL_EXPORT"
        params["IncrementalExportSpecification"] = {
            "ExportFromTime": _datetime(request.incremental_from_us),
            "ExportToTime": _datetime(request.incremental_to_us or now_us()),
            "ExportViewType": "NEW_IMAGE",
        }
    elif request.export_time_us is not None:
        params["ExportTime"] = _datetime(request.export_time_us)
    requested = now_us()
    try:
        response = dynamodb.export_table_to_point_in_time(**params)
    except AwsError as exc:
        if exc.code == "PointInTimeRecoveryUnavailableException":
            raise ConfigurationError(
                f"point-in-time recovery is not enabled on table {request.table}: an export "
                "needs it (aws dynamodb update-continuous-backups --table-name "
                f"{request.table} --point-in-time-recovery-specification "
                "PointInTimeRecoveryEnabled=true)"
            ) from exc
        raise
    arn = response["ExportDescription"]["ExportArn"]
    log.info("export %s requested into s3://%s/%s", arn, request.bucket, prefix)
    return RequestedExport(arn, request.bucket, prefix, request.export_time_us or requested)


def wait_for_export(
    dynamodb: Any,
    s3: Any,
    export: RequestedExport,
    *,
    timeout: float,
    poll: float = 10.0,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[str, int]:
    """Wait until the export is COMPLETED; return its folder URI and its export time.

    Raises:
        ConfigurationError: the export FAILED (with DynamoDB's reason).
        RetryableError: not done within ``timeout`` seconds (it goes on in DynamoDB).
    """
    deadline = time.monotonic() + timeout
    while True:
        described = dynamodb.describe_export(ExportArn=export.arn)["ExportDescription"]
        status = described.get("ExportStatus")
        if status == "COMPLETED":
            break
        if status == "FAILED":
            reason = described.get("FailureMessage") or described.get("FailureCode")
            raise ConfigurationError(
                f"export {export.arn} into s3://{export.bucket}/{export.prefix} failed: {reason}"
            )
        if time.monotonic() > deadline:
            raise RetryableError(
                f"export {export.arn} still {status} after {timeout:.0f}s; import it when done "
                f"with ddbcdc snapshot --from-export s3://{export.bucket}/{export.prefix}/..."
            )
        sleep(poll)
    moment = described.get("ExportTime")
    export_us = int(moment.timestamp() * 1_000_000) if moment else export.requested_us
    return _folder(s3, export), export_us


def _folder(s3: Any, export: RequestedExport) -> str:
    base = f"{export.prefix}/AWSDynamoDB/"
    response = s3.list_objects_v2(Bucket=export.bucket, Prefix=base, Delimiter="/")
    folders = [p["Prefix"] for p in response.get("CommonPrefixes", [])]
    if len(folders) != 1:
        raise ConfigurationError(
            f"export {export.arn}: expected one folder under s3://{export.bucket}/{base}, "
            f"found {len(folders)}"
        )
    return f"s3://{export.bucket}/{folders[0]}"
