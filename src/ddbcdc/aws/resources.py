"""The resources ``ddbcdc setup`` makes, one by one: the Kinesis stream and the source table.

Each is looked at before anything is done (described, waited for while it is in a
transition) and only created or removed when it must be; every step is reported as a
:class:`Step` saying which it was. How the table's changes reach the stream is
:mod:`ddbcdc.aws.wiring`; :mod:`ddbcdc.aws.provision` runs both in order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from ddbcdc.aws.errors import AwsNotFoundError
from ddbcdc.errors import ConfigurationError, RetryableError

__all__ = [
    "DEFAULT_STREAM_NAME",
    "KEY_ATTRIBUTE",
    "KEY_SCHEMAS",
    "Action",
    "ProvisionOptions",
    "Resources",
    "Step",
    "wait_for",
]

logger = logging.getLogger(__name__)

DEFAULT_STREAM_NAME = "ddbcdc-customers"
#: The key of the table setup creates (N, hash key); the load generator writes items so keyed.
KEY_ATTRIBUTE = "userid"
#: The key schema of each table model ``ddbcdc setup`` and ``ddbcdc load`` know: (attribute,
#: type), hash key first. ``single-table``: a single-table design (``ddbcdc load --model``).
KEY_SCHEMAS: dict[str, tuple[tuple[str, str], ...]] = {
    "customers": ((KEY_ATTRIBUTE, "N"),),
    "single-table": (("PK", "S"), ("SK", "S")),
}

Action = Literal["created", "existed", "enabled", "updated", "removed", "missing"]


@dataclass(frozen=True, slots=True)
class Step:
    """One thing set up or torn down, and what happened to it."""

    resource: str  # "stream", "table", "ttl", "destination", "dynamodb-stream", "tag"
    name: str
    action: Action
    detail: str = ""

    def __str__(self) -> str:
        text = f"{self.resource} {self.name}: {self.action}"
        return f"{text} ({self.detail})" if self.detail else text


@dataclass(frozen=True, slots=True)
class ProvisionOptions:
    """What to set up or tear down.

    Attributes:
        table: the source DynamoDB table (on-demand).
        key: its key schema, (attribute, type) hash first (:data:`KEY_SCHEMAS`).
        stream: the Kinesis stream name.
        shards: shard count when the stream is created.
        local: wire the local bridge (stream + tag) instead of the managed destination.
        timeout: seconds to wait for any resource to become ACTIVE or go away.
        source: ``kinesis``, or ``dynamodb-streams`` (the table's own stream, no Kinesis).
        ttl_attribute: enable the table's Time to Live on this attribute (None: leave it).
    """

    table: str = "customers"
    key: tuple[tuple[str, str], ...] = KEY_SCHEMAS["customers"]
    stream: str = DEFAULT_STREAM_NAME
    shards: int = 2
    local: bool = False
    timeout: float = 300.0
    source: Literal["kinesis", "dynamodb-streams"] = "kinesis"
    ttl_attribute: str | None = None

    def __post_init__(self) -> None:
        if self.shards < 1:
            raise ConfigurationError(f"shards must be >= 1, got {self.shards}")


def wait_for(
    what: str, check: Callable[[], bool], timeout: float, sleep: Callable[[float], None]
) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.05
    while not check():
        if time.monotonic() > deadline:
            raise RetryableError(f"timed out after {timeout:.0f}s waiting for {what}")
        sleep(delay)
        delay = min(delay * 2, 2.0)


class Resources:
    """The stream and the table of ``options``, and the steps taken on them."""

    def __init__(
        self,
        dynamodb: Any,
        kinesis: Any,
        options: ProvisionOptions,
        on_step: Callable[[Step], None] | None,
        sleep: Callable[[float], None],
    ) -> None:
        self.dynamodb = dynamodb
        self.kinesis = kinesis
        self.options = options
        self.steps: list[Step] = []
        self.on_step = on_step
        self.sleep = sleep

    def report(self, resource: str, name: str, action: Action, detail: str = "") -> None:
        step = Step(resource, name, action, detail)
        logger.info("%s", step)
        self.steps.append(step)
        if self.on_step is not None:
            self.on_step(step)

    # -- Kinesis stream ---------------------------------------------------------------------

    def describe_stream(self) -> dict[str, Any] | None:
        try:
            summary: dict[str, Any] = self.kinesis.describe_stream_summary(
                StreamName=self.options.stream
            )["StreamDescriptionSummary"]
        except AwsNotFoundError:
            return None
        return summary

    def ensure_stream(self) -> str:
        name = self.options.stream
        summary = self.describe_stream()
        if summary is not None and summary["StreamStatus"] == "DELETING":
            wait_for(
                f"stream {name} to finish deleting",
                lambda: self.describe_stream() is None,
                self.options.timeout,
                self.sleep,
            )
            summary = None
        if summary is None:
            self.kinesis.create_stream(StreamName=name, ShardCount=self.options.shards)
            self.report("stream", name, "created", f"{self.options.shards} shards")
        else:
            shards = summary.get("OpenShardCount")
            self.report("stream", name, "existed", f"{shards} open shards")
        summary = self.wait_stream_active()
        return str(summary["StreamARN"])

    def wait_stream_active(self) -> dict[str, Any]:
        found: dict[str, Any] = {}

        def active() -> bool:
            found["summary"] = self.describe_stream()
            return found["summary"] is not None and found["summary"]["StreamStatus"] == "ACTIVE"

        wait_for(
            f"stream {self.options.stream} to become ACTIVE",
            active,
            self.options.timeout,
            self.sleep,
        )
        return dict(found["summary"])

    # -- DynamoDB table ---------------------------------------------------------------------

    def describe_table(self) -> dict[str, Any] | None:
        try:
            table: dict[str, Any] = self.dynamodb.describe_table(TableName=self.options.table)[
                "Table"
            ]
        except AwsNotFoundError:
            return None
        return table

    def wait_table(self, *, gone: bool = False) -> dict[str, Any]:
        found: dict[str, Any] = {}

        def ready() -> bool:
            found["table"] = self.describe_table()
            if gone:
                return found["table"] is None
            return found["table"] is not None and found["table"]["TableStatus"] == "ACTIVE"

        state = "be deleted" if gone else "become ACTIVE"
        wait_for(f"table {self.options.table} to {state}", ready, self.options.timeout, self.sleep)
        return dict(found["table"] or {})

    def ensure_table(self) -> dict[str, Any]:
        name = self.options.table
        table = self.describe_table()
        if table is not None and table["TableStatus"] == "DELETING":
            self.wait_table(gone=True)
            table = None
        wanted = ", ".join(a for a, _ in self.options.key)
        if table is None:
            self.dynamodb.create_table(
                TableName=name,
                KeySchema=[
                    {"AttributeName": a, "KeyType": "RANGE" if i else "HASH"}
                    for i, (a, _) in enumerate(self.options.key)
                ],
                AttributeDefinitions=[
                    {"AttributeName": a, "AttributeType": t} for a, t in self.options.key
                ],
                BillingMode="PAY_PER_REQUEST",
            )
            shown = ", ".join(f"{a} {t}" for a, t in self.options.key)
            self.report("table", name, "created", f"key {shown}, on-demand")
        else:
            keys = ", ".join(k["AttributeName"] for k in table.get("KeySchema", []))
            detail = f"key {keys}"
            if keys != wanted:
                detail += f"; expected {wanted}: the loader will not fit this table"
            self.report("table", name, "existed", detail)
        return self.wait_table()

    def ensure_ttl(self) -> None:
        """Enable the table's Time to Live on ``options.ttl_attribute`` unless it is.

        Raises:
            ConfigurationError: TTL is on another attribute (DynamoDB changes it only after
                disabling it, which takes up to an hour).
        """
        name, attribute = self.options.table, self.options.ttl_attribute
        if attribute is None:
            return
        found = self.dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        status, current = found.get("TimeToLiveStatus"), found.get("AttributeName")
        if status in ("ENABLED", "ENABLING") and current == attribute:
            self.report("ttl", name, "existed", f"attribute {attribute}")
            return
        if status in ("ENABLED", "ENABLING"):
            raise ConfigurationError(
                f"table {name} has Time to Live on attribute {current!r}, not {attribute!r}: "
                "disable it first (DynamoDB then takes up to an hour before it can be enabled)"
            )
        self.dynamodb.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": attribute},
        )
        self.report("ttl", name, "enabled", f"attribute {attribute}")

    def remove_table(self, unwire: Callable[[dict[str, Any]], None]) -> None:
        """Remove the table, ``unwire`` first (it gets the table's description)."""
        table = self.describe_table()
        if table is None:
            self.report("table", self.options.table, "missing")
            return
        if table["TableStatus"] != "DELETING":
            unwire(self.wait_table())
            self.dynamodb.delete_table(TableName=self.options.table)
        self.wait_table(gone=True)
        self.report("table", self.options.table, "removed")

    def remove_stream(self) -> None:
        summary = self.describe_stream()
        if summary is None:
            self.report("stream", self.options.stream, "missing")
            return
        if summary["StreamStatus"] != "DELETING":
            self.kinesis.delete_stream(StreamName=self.options.stream, EnforceConsumerDeletion=True)
        wait_for(
            f"stream {self.options.stream} to be deleted",
            lambda: self.describe_stream() is None,
            self.options.timeout,
            self.sleep,
        )
        self.report("stream", self.options.stream, "removed")
