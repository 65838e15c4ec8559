"""Change records -> :class:`ChangeRecord`, pure.

Accepts the Kinesis Data Streams for DynamoDB record format, the DynamoDB Streams record
format (GetRecords, Lambda DynamoDB events) and Lambda Kinesis events.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

EventName = Literal["INSERT", "MODIFY", "REMOVE"]


class ChangeRecord(BaseModel):
    """One decoded item change.

    ``approximate_creation_us`` is the exact version used downstream: epoch microseconds.
    ``shard_id`` and ``sequence_number`` are the source position when known.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    event_id: str
    event_name: EventName
    table_name: str | None
    aws_region: str | None
    keys: dict[str, Any]
    new_image: dict[str, Any] | None
    old_image: dict[str, Any] | None
    approximate_creation: datetime
    approximate_creation_us: int
    size_bytes: int | None
    is_ttl_delete: bool
    shard_id: str | None = None
    sequence_number: str | None = None
