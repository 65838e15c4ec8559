"""One stream of the local DynamoDB Streams front: moto's records, kept in order, as DynamoDB
Streams shows them (LOCAL STACK ONLY; :mod:`ddbcdc.local.streams_front` serves them).

:class:`FrontStream` pulls the records moto has for a stream into a list that only grows, and
keeps each record's key hash; the front's :class:`~ddbcdc.local.lineage.Lineage` says which
shard of which generation shows each position. A record is changed three ways to be
DynamoDB's: its sequence number is that of its place in the lineage,
``ApproximateCreationDateTime`` is rounded down to the whole second (moto keeps milliseconds;
DynamoDB Streams documents whole seconds), and a REMOVE the front's Time to Live sweeper made
(taken from its :class:`~ddbcdc.local.ttl.Expiries` ledger as it is pulled, so once) carries
the TTL service's identity in the GetRecords API's form,
``userIdentity {"PrincipalId": "dynamodb.amazonaws.com", "Type": "Service"}``. Every other
record goes on as moto wrote it, a REMOVE without a userIdentity, as a user's.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ddbcdc.local.awsjson import JsonApiClient
from ddbcdc.local.lineage import Generation, Lineage, key_hash
from ddbcdc.local.ttl import TTL_STREAMS_IDENTITY, Expiries

__all__ = ["FrontError", "FrontStream", "now_ms"]

_PULL_EVERY_S = 0.05


class FrontError(Exception):
    """An error the front answers with: its DynamoDB Streams error code, message and status."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def now_ms() -> int:
    """Now, in epoch milliseconds."""
    return int(time.time() * 1000)


class FrontStream:
    """One stream: moto's records so far and the lineage they are shown in.

    Args:
        arn: the stream's ARN.
        moto: a DynamoDB Streams client of moto's, this stream's own.
        shards: shards in the lineage's first generation.
        expiries: the ledger of the deletions the front's TTL sweepers make.
    """

    def __init__(self, arn: str, moto: JsonApiClient, shards: int, expiries: Expiries) -> None:
        self.arn = arn
        self.lock = threading.Lock()
        self.records: list[dict[str, Any]] = []
        self.hashes: list[int] = []
        self.lineage = Lineage(arn, shards, now_ms())
        self.table = ""
        self._moto = moto
        self._expiries = expiries
        self._iterator: str | None = None
        self._pulled = 0.0

    def pull(self, *, force: bool = False) -> None:
        """Append the records moto has that are not here yet (call with the lock held)."""
        if not force and time.monotonic() - self._pulled < _PULL_EVERY_S:
            return
        if self._iterator is None:
            description = self._moto.call("DescribeStream", {"StreamArn": self.arn})
            self.table = description["StreamDescription"]["TableName"]
            shard = description["StreamDescription"]["Shards"][0]["ShardId"]
            self._iterator = self._moto.call(
                "GetShardIterator",
                {"StreamArn": self.arn, "ShardId": shard, "ShardIteratorType": "TRIM_HORIZON"},
            )["ShardIterator"]
        while True:
            answer = self._moto.call("GetRecords", {"ShardIterator": self._iterator, "Limit": 1000})
            self._iterator = answer.get("NextShardIterator") or self._iterator
            got = answer.get("Records", [])
            for record in got:
                if self._expiries.is_expiry(self.table, record):
                    record = {**record, "userIdentity": TTL_STREAMS_IDENTITY}
                self.hashes.append(key_hash(record["dynamodb"]["Keys"]))
                self.records.append(record)
            if len(got) < 1000:
                break
        self._pulled = time.monotonic()

    def locate(self, shard_id: str) -> tuple[Generation, int]:
        """The generation of ``shard_id`` and its index there."""
        found = self.lineage.find(shard_id)
        if found is None:
            raise FrontError(
                "ResourceNotFoundException", f"shard {shard_id} not found in {self.arn}"
            )
        return found

    def shown(self, generation: Generation, position: int) -> dict[str, Any]:
        """The record at ``position`` as DynamoDB Streams shows it in ``generation``."""
        record = self.records[position]
        dynamodb = dict(record["dynamodb"])
        dynamodb["SequenceNumber"] = generation.sequence(position)
        created = dynamodb.get("ApproximateCreationDateTime")
        if isinstance(created, int | float):
            dynamodb["ApproximateCreationDateTime"] = int(created)
        return {**record, "dynamodb": dynamodb}
