"""boto3 clients built from :class:`~ddbcdc.settings.Settings`, one way for every part."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

from ddbcdc.settings import Settings

__all__ = ["client", "endpoint_for"]

_ENDPOINT_FIELDS = {
    "dynamodb": "dynamodb_endpoint",
    "dynamodbstreams": "dynamodbstreams_endpoint",
    "kinesis": "kinesis_endpoint",
    "cloudwatch": "cloudwatch_endpoint",
    "s3": "s3_endpoint",
}


def endpoint_for(service: str, settings: Settings) -> str | None:
    """The endpoint URL configured for ``service``, or None for the AWS default."""
    field = _ENDPOINT_FIELDS.get(service)
    if field is None:
        return None
    value: str | None = getattr(settings, field)
    if value is None and service == "dynamodbstreams":
        # moto and most emulators serve both DynamoDB APIs on one endpoint.
        value = settings.dynamodb_endpoint
    return value


def client(service: str, settings: Settings, *, max_attempts: int = 10) -> Any:
    """A boto3 client for ``service`` with the configured region, endpoint and retries."""
    endpoint = endpoint_for(service, settings)
    config = Config(
        region_name=settings.aws_region,
        retries={"mode": "standard", "max_attempts": max_attempts},
        connect_timeout=5,
        read_timeout=30,
        # An S3 endpoint of its own (moto, MinIO) serves buckets as paths, not host names.
        s3={"addressing_style": "path"} if service == "s3" and endpoint else None,
    )
    return boto3.session.Session().client(
        service,  # type: ignore[call-overload]
        endpoint_url=endpoint,
        config=config,
    )
