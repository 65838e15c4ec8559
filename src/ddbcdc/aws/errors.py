"""What an AWS error means, named without values: the one home of AWS error codes.

Every client :func:`ddbcdc.aws.client` builds raises :class:`AwsError` (through
:class:`TypedErrors`) where botocore raises ``ClientError`` or one of its own exceptions,
after botocore's retries. The error names the service, the operation, the resource the
request was about (table, stream, bucket and key, export) and the endpoint, and keeps the
AWS error code for the code that decides what to do next::

    AwsError                  service, operation, resource, endpoint, code
    ├── AwsUnreachableError   no connection: refused, unknown host, connect timeout, TLS
    ├── AwsAccessDeniedError  no or invalid credentials, or the policy does not allow it
    └── AwsNotFoundError      the table, stream, bucket, object or export does not exist

:attr:`AwsError.retryable` says whether waiting may help: throttling, a server error, a
connection refused or lost. Loops that run long (a Scan, a load) retry those with backoff;
the first request of a command is made outside such loops, so a wrong endpoint ends it after
the client's own attempts, in seconds.

The text never carries item values: AWS's message is kept only for codes whose messages are
about the environment (not found, access, throttling); request parameters are named, never
shown, except the resource names above.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from ddbcdc.errors import DdbcdcError

__all__ = [
    "THROTTLE_CODES",
    "TRANSIENT_CODES",
    "AwsAccessDeniedError",
    "AwsError",
    "AwsNotFoundError",
    "AwsUnreachableError",
    "TypedErrors",
    "aws_error",
    "error_code",
    "fault",
]

THROTTLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "SlowDown",
        "LimitExceededException",
    }
)
TRANSIENT_CODES = frozenset(
    {"InternalServerError", "ServiceUnavailable", "InternalFailure", "RequestTimeout"}
)
_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidAccessKeyId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "MissingAuthenticationToken",
        "MissingAuthenticationTokenException",
    }
)
_NOT_FOUND_CODES = frozenset(
    {"ResourceNotFoundException", "NoSuchBucket", "NoSuchKey", "ExportNotFoundException"}
)
#: Codes whose messages speak of the environment only, never of an item's values.
_PLAIN_MESSAGE_CODES = (
    _DENIED_CODES
    | _NOT_FOUND_CODES
    | THROTTLE_CODES
    | TRANSIENT_CODES
    | {"ResourceInUseException", "PointInTimeRecoveryUnavailableException"}
)
_BARE_STATUS = {403: "access denied", 404: "not found"}
_NO_CREDENTIALS = frozenset(
    {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"}
)


class AwsError(DdbcdcError):
    """An AWS request failed.

    Attributes:
        service: the service's name (``DynamoDB``, ``Kinesis``, ``S3``).
        operation: the API operation (``DescribeTable``).
        resource: what the request was about (``table customers``, ``s3://bucket/key``),
            or "".
        endpoint: the endpoint URL the client talks to.
        code: AWS's error code, or botocore's exception name.
        status: the HTTP status, 0 when there was no answer.
        reason: what went wrong, safe to print (the code, and AWS's message when it
            cannot carry values).
        aws_message: AWS's message as it came, for code that must tell errors of one code
            apart; never printed (it may quote a value).
        retryable: throttling, a server error, a connection refused or lost: waiting may help.
        throttled: the service asked to slow down.
    """

    def __init__(
        self,
        *,
        service: str,
        operation: str,
        resource: str,
        endpoint: str,
        code: str,
        status: int = 0,
        reason: str = "",
        aws_message: str = "",
        retryable: bool = False,
    ) -> None:
        self.service = service
        self.operation = operation
        self.resource = resource
        self.endpoint = endpoint
        self.code = code
        self.status = status
        self.reason = reason or code
        self.aws_message = aws_message
        self.retryable = retryable
        self.throttled = code in THROTTLE_CODES
        super().__init__(str(self))

    def __str__(self) -> str:
        on = f" on {self.resource}" if self.resource else ""
        return f"{self.service} {self.operation}{on} at {self.endpoint}: {self.reason}"


class AwsUnreachableError(AwsError):
    """The endpoint could not be connected to (after the client's own attempts)."""


class AwsAccessDeniedError(AwsError):
    """No credentials, credentials AWS does not accept, or a policy that does not allow it."""


class AwsNotFoundError(AwsError):
    """The table, stream, bucket, object or export the request names does not exist."""


def error_code(exc: BaseException) -> str:
    """AWS's error code of ``exc`` (an :class:`AwsError` or botocore's ``ClientError``), or
    the exception's type name."""
    if isinstance(exc, AwsError):
        return exc.code
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code") or type(exc).__name__)
    return type(exc).__name__


def fault(exc: BaseException) -> str | None:
    """One line naming a botocore exception raised outside a client's call (reading a
    response body, building a client), None for anything else."""
    if isinstance(exc, ClientError):
        return f"AWS {exc.operation_name}: {error_code(exc)}"
    if isinstance(exc, (BotoConnectionError, HTTPClientError)):
        return f"AWS: {type(exc).__name__}: {exc}"  # names the endpoint URL
    if isinstance(exc, BotoCoreError):
        return f"AWS: {_botocore_error(exc)[2]}"
    return None


def _resource(params: Mapping[str, Any]) -> str:
    """What a request is about, from the parameters that name resources (never values)."""
    if "Bucket" in params:
        path = params.get("Key") or params.get("Prefix") or ""
        return f"s3://{params['Bucket']}/{path}"
    if "TableName" in params:
        return f"table {params['TableName']}"
    items = params.get("RequestItems")
    if isinstance(items, Mapping) and items:
        return "table " + ", ".join(sorted(str(name) for name in items))
    for name, noun in (
        ("StreamARN", "stream"),
        ("StreamName", "stream"),
        ("ConsumerARN", "consumer"),
        ("ExportArn", "export"),
        ("TableArn", "table"),
        ("ResourceArn", "resource"),
        ("StreamArn", "stream"),
    ):
        if params.get(name):
            return f"{noun} {params[name]}"
    return ""


def _client_error(exc: ClientError) -> tuple[type[AwsError], str, int, str, bool]:
    error = exc.response.get("Error", {})
    code = error_code(exc)
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    message = str(error.get("Message") or "").strip().splitlines()
    reason = f"{code}: {message[0]}" if message and code in _PLAIN_MESSAGE_CODES else code
    if code.isdigit():  # an answer without a code: S3's to HEAD, an emulator's to a JSON API
        reason = f"{_BARE_STATUS.get(int(code), 'failed')} (HTTP {code})"
    kind: type[AwsError] = AwsError
    if code in _DENIED_CODES or status == 403:
        kind = AwsAccessDeniedError
    elif code in _NOT_FOUND_CODES or code == "404":
        kind = AwsNotFoundError
    retryable = code in THROTTLE_CODES or code in TRANSIENT_CODES or status >= 500
    return kind, code, status, reason, retryable


def _botocore_error(exc: BotoCoreError) -> tuple[type[AwsError], str, str, bool]:
    code = type(exc).__name__
    if isinstance(exc, BotoConnectionError):
        return AwsUnreachableError, code, f"cannot connect ({code})", True
    if isinstance(exc, HTTPClientError):  # connected, then the connection broke
        return AwsError, code, f"connection lost ({code})", True
    if code in _NO_CREDENTIALS:
        return AwsAccessDeniedError, code, f"no usable AWS credentials ({code})", False
    return AwsError, code, f"the request failed ({code})", False


def aws_error(
    exc: ClientError | BotoCoreError,
    *,
    service: str,
    operation: str,
    params: Mapping[str, Any],
    endpoint: str,
) -> AwsError:
    """The :class:`AwsError` for botocore's ``exc`` raised by ``operation`` with ``params``."""
    status, message = 0, ""
    if isinstance(exc, ClientError):
        kind, code, status, reason, retryable = _client_error(exc)
        message = str(exc.response.get("Error", {}).get("Message") or "")
    else:
        kind, code, reason, retryable = _botocore_error(exc)
    return kind(
        service=service,
        operation=operation,
        resource=_resource(params),
        endpoint=endpoint,
        code=code,
        status=status,
        reason=reason,
        aws_message=message,
        retryable=retryable,
    )


class TypedErrors:
    """Mixed into the clients :func:`ddbcdc.aws.client` builds: every API call raises
    :class:`AwsError` from botocore's exception."""

    meta: Any

    def _make_api_call(self, operation_name: str, api_params: dict[str, Any]) -> Any:
        try:
            return super()._make_api_call(operation_name, api_params)  # type: ignore[misc]
        except (ClientError, BotoCoreError) as exc:
            raise aws_error(
                exc,
                service=self.meta.service_model.service_id,
                operation=operation_name,
                params=api_params,
                endpoint=self.meta.endpoint_url,
            ) from exc
