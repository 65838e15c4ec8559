"""AWS errors as ddbcdc's clients raise them: typed, naming service, operation, resource and
endpoint, never an item's values; and the retries that read them."""

from __future__ import annotations

import random
from typing import Any

import pytest
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)
from botocore.stub import Stubber

from ddbcdc.aws import clients as aws
from ddbcdc.aws.errors import (
    AwsAccessDeniedError,
    AwsError,
    AwsNotFoundError,
    AwsUnreachableError,
    aws_error,
    error_code,
)
from ddbcdc.aws.throttle import MAX_ATTEMPTS, call_with_backoff
from ddbcdc.settings import Settings

ENDPOINT = "http://127.0.0.1:4566"


def _client_error(code: str, message: str = "", status: int = 400) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "Op")


def _typed(exc: Any, operation: str = "DescribeTable", **params: Any) -> AwsError:
    return aws_error(exc, service="DynamoDB", operation=operation, params=params, endpoint=ENDPOINT)


def test_a_missing_table_names_service_operation_table_and_endpoint() -> None:
    error = _typed(
        _client_error("ResourceNotFoundException", "Requested resource not found", 400),
        TableName="customers",
    )
    assert isinstance(error, AwsNotFoundError) and not error.retryable
    assert str(error) == (
        f"DynamoDB DescribeTable on table customers at {ENDPOINT}: "
        "ResourceNotFoundException: Requested resource not found"
    )
    assert error_code(error) == "ResourceNotFoundException"


def test_a_message_that_may_quote_a_value_is_never_shown() -> None:
    message = "The parameter cannot be converted to a numeric value: 078-05-1120"
    error = _typed(
        _client_error("ValidationException", message),
        "PutItem",
        TableName="people",
        Item={"ssn": {"N": "078-05-1120"}},
    )
    assert "078-05-1120" not in str(error)
    assert str(error).endswith("on table people at http://127.0.0.1:4566: ValidationException")
    assert error.aws_message == message  # for code that must tell errors of one code apart


def test_the_resource_is_named_from_the_request_never_its_values() -> None:
    def named(**params: Any) -> str:
        return _typed(_client_error("X"), **params).resource

    assert named(Bucket="b", Key="p/AWSDynamoDB/1/manifest-summary.json") == (
        "s3://b/p/AWSDynamoDB/1/manifest-summary.json"
    )
    assert named(Bucket="b", Prefix="p/data/") == "s3://b/p/data/"
    assert named(RequestItems={"t2": [{"PutRequest": {"Item": {"a": {"S": "v"}}}}], "t1": []}) == (
        "table t1, t2"
    )
    assert named(StreamName="s", Limit=1) == "stream s"
    assert named(ExportArn="arn:aws:dynamodb:r:1:table/t/export/e") == (
        "export arn:aws:dynamodb:r:1:table/t/export/e"
    )
    assert named(Key={"userid": {"N": "7"}}) == ""  # a DynamoDB key is an item's value


def test_what_each_fault_is_and_whether_waiting_helps() -> None:
    unreachable = _typed(EndpointConnectionError(endpoint_url=f"{ENDPOINT}/"))
    assert isinstance(unreachable, AwsUnreachableError) and unreachable.retryable
    assert "cannot connect (EndpointConnectionError)" in str(unreachable)
    lost = _typed(ReadTimeoutError(endpoint_url=ENDPOINT))
    assert type(lost) is AwsError and lost.retryable and "connection lost" in str(lost)
    assert isinstance(_typed(NoCredentialsError()), AwsAccessDeniedError)
    for code in ("AccessDeniedException", "AccessDenied", "UnrecognizedClientException"):
        assert isinstance(_typed(_client_error(code, status=400)), AwsAccessDeniedError), code
    bare = _typed(_client_error("403", status=403))  # an answer whose body had no code
    assert isinstance(bare, AwsAccessDeniedError) and bare.reason == "access denied (HTTP 403)"
    throttled = _typed(_client_error("ProvisionedThroughputExceededException"))
    assert throttled.retryable and throttled.throttled
    assert _typed(_client_error("InternalServerError", status=500)).retryable
    assert not _typed(_client_error("ValidationException")).retryable


def test_invalid_parameters_are_named_without_their_values() -> None:
    report = "Invalid type for parameter Item.ssn.N, value: 78051120, type: <class 'int'>"
    error = _typed(ParamValidationError(report=report), "PutItem", TableName="people")
    assert "78051120" not in str(error) and "ParamValidationError" in str(error)


def test_a_client_of_ddbcdc_raises_typed_errors() -> None:
    settings = Settings(_env_file=None, dynamodb_endpoint=ENDPOINT, aws_region="us-east-1")
    client = aws.client("dynamodb", settings)
    with Stubber(client) as stub:
        stub.add_client_error(
            "describe_table",
            service_error_code="ResourceNotFoundException",
            service_message="Requested resource not found",
            http_status_code=400,
        )
        with pytest.raises(AwsNotFoundError) as info:
            client.describe_table(TableName="absent")
    assert str(info.value).startswith(f"DynamoDB DescribeTable on table absent at {ENDPOINT}")
    assert isinstance(info.value.__cause__, ClientError)


class _Flaky:
    def __init__(self, *errors: AwsError) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self, **_: Any) -> dict[str, Any]:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return {"Items": []}


def test_long_runs_retry_what_waiting_cures_and_end_on_the_rest() -> None:
    throttled = _typed(_client_error("ThrottlingException"), "Scan", TableName="t")
    call = _Flaky(throttled, throttled)
    result = call_with_backoff(call, "scan", rng=random.Random(0), sleep=lambda _: None)
    assert result == {"Items": []} and call.calls == 3

    denied = _typed(_client_error("AccessDeniedException"), "Scan", TableName="t")
    call = _Flaky(denied)
    with pytest.raises(AwsAccessDeniedError):
        call_with_backoff(call, "scan", sleep=lambda _: None)
    assert call.calls == 1

    call = _Flaky(*[throttled] * MAX_ATTEMPTS)
    with pytest.raises(AwsError) as info:  # retries spent: the AWS error itself, named
        call_with_backoff(call, "scan", rng=random.Random(0), sleep=lambda _: None)
    assert info.value is throttled and call.calls == MAX_ATTEMPTS
