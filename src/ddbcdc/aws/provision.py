"""Creating and removing what the pipeline reads from: the Kinesis stream, the source table
and the wiring between them (``ddbcdc setup`` / ``teardown``).

:func:`set_up` is idempotent: every step first looks at what exists and only creates or changes
what is missing, and reports each step as a :class:`~ddbcdc.aws.resources.Step` saying which
it was. The stream and the table are :mod:`ddbcdc.aws.resources`; how the table's changes
reach the stream (the managed destination against AWS, a tagged DynamoDB Stream for the local
bridge) is :mod:`ddbcdc.aws.wiring`.

With ``source="dynamodb-streams"`` there is no Kinesis stream: the table's own DynamoDB stream
is enabled (NEW_AND_OLD_IMAGES). A stream of another view type is replaced on the local stack
only; against AWS that would cut off its other readers, so it is refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from ddbcdc.aws.resources import DEFAULT_STREAM_NAME, ProvisionOptions, Resources, Step
from ddbcdc.aws.wiring import LOCAL_DESTINATION_TAG, Wiring
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

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


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
    resources = Resources(dynamodb, kinesis, options, on_step, sleep)
    wiring = Wiring(resources)
    if options.source == "dynamodb-streams":
        table = wiring.ensure_dynamodb_stream(resources.ensure_table())
        resources.ensure_ttl()
        return SetupResult(
            stream_name="",
            stream_arn=str(table["LatestStreamArn"]),
            table_name=options.table,
            table_arn=str(table["TableArn"]),
            mode="dynamodb-streams",
            steps=tuple(resources.steps),
        )
    stream_arn = resources.ensure_stream()
    table = resources.ensure_table()
    resources.ensure_ttl()
    if options.local:
        table = wiring.ensure_dynamodb_stream(table)
        wiring.ensure_tag(table["TableArn"], stream_arn)
    else:
        wiring.ensure_destination(stream_arn)
    return SetupResult(
        stream_name=options.stream,
        stream_arn=stream_arn,
        table_name=options.table,
        table_arn=str(table["TableArn"]),
        mode="local" if options.local else "managed",
        steps=tuple(resources.steps),
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
    resources = Resources(dynamodb, kinesis, options, on_step, sleep)
    resources.remove_table(Wiring(resources).unwire)
    if options.source == "kinesis":
        resources.remove_stream()
    return tuple(resources.steps)
