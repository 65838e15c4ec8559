"""boto3 clients built from :class:`~ddbcdc.settings.Settings`, one way for every part.

Every client raises :class:`~ddbcdc.aws.errors.AwsError` instead of botocore's exceptions
(see :mod:`ddbcdc.aws.errors`), once botocore's own retries are spent.
"""

from __future__ import annotations

import threading
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.loaders import Loader

from ddbcdc.aws.errors import TypedErrors
from ddbcdc.settings import Settings

__all__ = ["CONNECT_TIMEOUT_S", "DEFAULT_MAX_ATTEMPTS", "client", "endpoint_for"]

#: Attempts at a request (AWS's "standard" retries, exponential backoff with jitter): an
#: endpoint that refuses connections costs ~8 s on average (at most 15 s) before the error.
DEFAULT_MAX_ATTEMPTS = 5
#: Seconds to wait for a TCP connection: an endpoint that drops packets costs this each try.
CONNECT_TIMEOUT_S = 5

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


def _typed_errors(base_classes: list[type], **_: Any) -> None:
    base_classes.insert(0, TypedErrors)


class _Models:
    """botocore's loader of service models and endpoints, shared by every client's session.

    A fresh session lists every service botocore knows and parses the endpoint rules and the
    service's model again (~50 ms a client); the loader keeps what it read. Credentials,
    region and retries stay each session's own."""

    lock = threading.Lock()
    loader: Loader | None = None


def _session() -> boto3.session.Session:
    """A new boto3 session on the shared loader."""
    core = botocore.session.Session()
    with _Models.lock:
        if _Models.loader is None:
            _Models.loader = core.get_component("data_loader")
        else:
            core.register_component("data_loader", _Models.loader)
    session = boto3.session.Session(botocore_session=core)
    session.events.register("creating-client-class", _typed_errors)
    return session


def client(service: str, settings: Settings, *, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> Any:
    """A boto3 client for ``service`` with the configured region, endpoint and retries.

    Its calls raise :class:`~ddbcdc.aws.errors.AwsError` (naming service, operation,
    resource and endpoint) rather than botocore's exceptions.
    """
    endpoint = endpoint_for(service, settings)
    config = Config(
        region_name=settings.aws_region,
        retries={"mode": "standard", "max_attempts": max_attempts},
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=30,
        # An S3 endpoint of its own (moto, MinIO) serves buckets as paths, not host names.
        s3={"addressing_style": "path"} if service == "s3" and endpoint else None,
    )
    return _session().client(
        service,  # type: ignore[call-overload]
        endpoint_url=endpoint,
        config=config,
    )
