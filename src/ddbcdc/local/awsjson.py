"""A small client for the AWS JSON protocol, used by the bridge against the local emulators.

botocore parses every response through its service model, which costs more than the emulators
themselves on the bridge's hot path, and it decodes binary attribute values that the bridge
only has to pass through. This client signs each request with SigV4 (the emulators take the
region and account from the signature), posts the JSON body over one keep-alive HTTP/1.1
connection and returns the decoded JSON as it came over the wire.
"""

from __future__ import annotations

import http.client
import logging
from typing import Any
from urllib.parse import urlsplit

import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from ddbcdc.errors import DdbcdcError

__all__ = ["AwsApiError", "JsonApiClient"]

log = logging.getLogger(__name__)

_TARGET_PREFIX = {
    "dynamodb": ("DynamoDB_20120810", "application/x-amz-json-1.0"),
    "dynamodbstreams": ("DynamoDBStreams_20120810", "application/x-amz-json-1.0"),
    "kinesis": ("Kinesis_20131202", "application/x-amz-json-1.1"),
}
# The signing name of DynamoDB Streams is "dynamodb".
_SIGNING_NAME = {"dynamodbstreams": "dynamodb"}


class AwsApiError(DdbcdcError):
    """An error answer from an AWS JSON API (or no answer at all).

    Attributes:
        code: the error type, e.g. ``ResourceNotFoundException`` (``ConnectionError`` when the
            endpoint did not answer).
        status: the HTTP status, 0 when there was no answer.
    """

    def __init__(self, code: str, message: str, *, status: int = 0) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.status = status


class JsonApiClient:
    """Signed AWS JSON calls to one endpoint for one service.

    Not thread-safe: give each thread its own client.

    Args:
        service: ``dynamodb``, ``dynamodbstreams`` or ``kinesis``.
        endpoint: ``http://host:port`` of the emulator.
        region: the region to sign for.
        access_key: the access key to sign with (emulators derive the account from it).
        secret_key: the matching secret key.
        timeout: socket timeout in seconds.
    """

    def __init__(
        self,
        service: str,
        endpoint: str,
        *,
        region: str,
        access_key: str = "testing",
        secret_key: str = "testing",  # noqa: S107 - emulator credentials
        timeout: float = 30.0,
    ) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"plain http:// endpoint expected, got {endpoint!r}")
        self.service = service
        self.region = region
        self._prefix, self._content_type = _TARGET_PREFIX[service]
        self._host = parts.hostname
        self._port = parts.port or 80
        self._url = f"http://{parts.netloc}/"
        self._timeout = timeout
        self._signer = SigV4Auth(
            Credentials(access_key, secret_key), _SIGNING_NAME.get(service, service), region
        )
        self._conn: http.client.HTTPConnection | None = None

    def call(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        """Call ``operation`` with ``body``; returns the JSON answer.

        Raises:
            AwsApiError: the service answered with an error, or could not be reached.
        """
        data = orjson.dumps(body)
        request = AWSRequest(
            method="POST",
            url=self._url,
            data=data,
            headers={
                "Content-Type": self._content_type,
                "X-Amz-Target": f"{self._prefix}.{operation}",
            },
        )
        self._signer.add_auth(request)
        status, payload = self._post(data, dict(request.headers.items()))
        answer: dict[str, Any] = orjson.loads(payload) if payload else {}
        if status >= 300:
            code = str(answer.get("__type", f"HTTP{status}")).rsplit("#", 1)[-1]
            message = str(answer.get("message") or answer.get("Message") or "")
            raise AwsApiError(code, message, status=status)
        return answer

    def _post(self, data: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(
                    self._host, self._port, timeout=self._timeout
                )
            try:
                self._conn.request("POST", "/", body=data, headers=headers)
                response = self._conn.getresponse()
                return response.status, response.read()
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if attempt == 2:
                    raise AwsApiError("ConnectionError", str(exc)) from exc
                # A kept-alive connection the server closed: one fresh try.
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close the connection (a later call opens a new one)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
