"""How the worker reads its stream: retrieval mode, fan-out consumer and start position, pure.

- **Retrieval mode.** ``FANOUT`` (enhanced fan-out: a registered consumer with its own
  2 MB/s per shard, records pushed over SubscribeToShard) is the KCL's default against AWS
  and ddbcdc's. ``POLLING`` (GetRecords every ``idleTimeBetweenReadsInMillis``, the shard's
  shared 2 MB/s) is chosen when any endpoint setting points away from AWS, as the local
  stack's do, or when ``DDBCDC_RETRIEVAL_MODE=POLLING`` asks for it.
- **Consumer.** Under FANOUT the KCL registers (or finds) the consumer named
  ``DDBCDC_CONSUMER_NAME`` (default: the application name), or uses the consumer
  ``DDBCDC_CONSUMER_ARN`` as it is, registering nothing.
- **Start position** of a shard that has no checkpoint yet: ``TRIM_HORIZON``, ``LATEST``, or
  ``AT_TIMESTAMP`` with ``DDBCDC_INITIAL_POSITION_TIMESTAMP``. :func:`start_position` is the
  one place that resolves it, for the worker and for any other code that must know where
  the worker starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from urllib.parse import urlsplit

from ddbcdc.decode.timestamps import epoch_us, parse_timestamp
from ddbcdc.errors import ConfigurationError
from ddbcdc.settings import Settings

__all__ = [
    "PositionKind",
    "RetrievalMode",
    "StartPosition",
    "check_consumer",
    "is_aws_endpoint",
    "retrieval_mode",
    "start_position",
]

RetrievalMode = Literal["FANOUT", "POLLING"]
PositionKind = Literal["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"]
POSITION_KINDS: tuple[PositionKind, ...] = ("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP")

_AWS_HOST = re.compile(r"(^|\.)(amazonaws\.com|amazonaws\.com\.cn|api\.aws)$")
_CONSUMER_ARN = re.compile(
    r"^arn:aws[a-z-]*:kinesis:[a-z0-9-]+:\d{12}:stream/[A-Za-z0-9_.-]+/consumer/"
    r"[A-Za-z0-9_.-]+:\d+$"
)
_CONSUMER_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def is_aws_endpoint(url: str) -> bool:
    """Whether ``url`` is an AWS service endpoint (``*.amazonaws.com``, VPC endpoints too)."""
    return bool(_AWS_HOST.search(urlsplit(url).hostname or ""))


def retrieval_mode(settings: Settings) -> RetrievalMode:
    """``settings.retrieval_mode`` when set; else POLLING when an endpoint is not AWS's.

    Not every emulator serves SubscribeToShard, so any endpoint outside AWS (the local
    stack's are on 127.0.0.1) means POLLING unless FANOUT is asked for (kinesis-local serves
    it); against AWS it is FANOUT, as the KCL's own default.
    """
    if settings.retrieval_mode is not None:
        return settings.retrieval_mode
    endpoints = (
        settings.kinesis_endpoint,
        settings.dynamodb_endpoint,
        settings.dynamodbstreams_endpoint,
        settings.cloudwatch_endpoint,
    )
    if any(url and not is_aws_endpoint(url) for url in endpoints):
        return "POLLING"
    return "FANOUT"


def check_consumer(settings: Settings, mode: RetrievalMode) -> None:
    """Refuse consumer settings that cannot apply: malformed, both given, or under POLLING.

    Raises:
        ConfigurationError: naming the setting and what to do.
    """
    name, arn = settings.consumer_name, settings.consumer_arn
    if name is None and arn is None:
        return
    if mode == "POLLING":
        given = "DDBCDC_CONSUMER_ARN" if arn is not None else "DDBCDC_CONSUMER_NAME"
        raise ConfigurationError(
            f"{given} is set but the retrieval mode is POLLING (an endpoint outside AWS, or "
            "DDBCDC_RETRIEVAL_MODE=POLLING): unset it, or set DDBCDC_RETRIEVAL_MODE=FANOUT"
        )
    if name is not None and arn is not None:
        raise ConfigurationError(
            "set DDBCDC_CONSUMER_NAME or DDBCDC_CONSUMER_ARN, not both (the KCL uses an ARN "
            "as it is and registers nothing)"
        )
    if name is not None and not _CONSUMER_NAME.match(name):
        raise ConfigurationError(
            f"DDBCDC_CONSUMER_NAME {name!r} is not a Kinesis consumer name "
            "(1-128 of A-Z a-z 0-9 _ . -)"
        )
    if arn is not None and not _CONSUMER_ARN.match(arn):
        raise ConfigurationError(
            f"DDBCDC_CONSUMER_ARN {arn!r} is not a Kinesis consumer ARN "
            "(arn:aws:kinesis:REGION:ACCOUNT:stream/STREAM/consumer/NAME:CREATION_TIMESTAMP)"
        )


@dataclass(frozen=True, slots=True)
class StartPosition:
    """Where a shard without a checkpoint starts.

    Attributes:
        kind: ``TRIM_HORIZON`` (the oldest record kept), ``LATEST`` (records arriving after
            the worker starts) or ``AT_TIMESTAMP``.
        timestamp: for ``AT_TIMESTAMP``, the aware UTC time: the first record read is the
            first whose Kinesis arrival time is at or after it. None otherwise.
    """

    kind: PositionKind
    timestamp: datetime | None = None

    @property
    def timestamp_us(self) -> int | None:
        """The timestamp as exact epoch microseconds (None unless AT_TIMESTAMP)."""
        return None if self.timestamp is None else epoch_us(self.timestamp)

    @property
    def kcl_seconds(self) -> int | None:
        """The timestamp as the KCL's ``initialPositionInStreamExtended`` takes it.

        Whole epoch seconds, rounded down: the KCL starts no later than asked, so nothing
        at or after the timestamp is skipped; records of the same second before it may be
        read.
        """
        micros = self.timestamp_us
        return None if micros is None else micros // 1_000_000


def start_position(
    settings: Settings,
    *,
    kind: str | None = None,
    timestamp: str | datetime | None = None,
) -> StartPosition:
    """The configured start position; ``kind`` and ``timestamp`` override the settings.

    A timestamp without a kind means AT_TIMESTAMP (in the settings too:
    ``DDBCDC_INITIAL_POSITION_TIMESTAMP`` alone is enough). A ``kind`` given without a
    timestamp takes ``settings.initial_position_timestamp`` when it is AT_TIMESTAMP.

    Raises:
        ConfigurationError: an unknown kind, AT_TIMESTAMP without a timestamp, or a
            timestamp with another kind.
    """
    chosen: str
    if kind is None and timestamp is None:
        chosen, moment = settings.initial_position, settings.initial_position_timestamp
        if moment is not None and "initial_position" not in settings.model_fields_set:
            chosen = "AT_TIMESTAMP"
        where = "DDBCDC_INITIAL_POSITION"
    else:
        chosen = (kind or "AT_TIMESTAMP").strip().upper()
        moment = _moment(timestamp) if timestamp is not None else None
        if moment is None and chosen == "AT_TIMESTAMP":
            moment = settings.initial_position_timestamp
        where = "the initial position"
    if chosen not in POSITION_KINDS:
        raise ConfigurationError(
            f"initial position {chosen!r} must be one of {', '.join(POSITION_KINDS)}"
        )
    if chosen == "AT_TIMESTAMP" and moment is None:
        raise ConfigurationError(
            "AT_TIMESTAMP needs a time: set DDBCDC_INITIAL_POSITION_TIMESTAMP (or pass "
            "--initial-timestamp), ISO-8601 or epoch seconds"
        )
    if chosen != "AT_TIMESTAMP" and moment is not None:
        raise ConfigurationError(
            f"a start timestamp is given but {where} is {chosen}: use AT_TIMESTAMP, or drop "
            "the timestamp"
        )
    return StartPosition(chosen, moment)


def _moment(value: str | datetime) -> datetime:
    try:
        return parse_timestamp(value)
    except ValueError as exc:
        raise ConfigurationError(f"initial timestamp: {exc}") from exc
