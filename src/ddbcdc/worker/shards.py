"""The shards of the stream, registered in PostgreSQL so that stream time counts every one.

Stream time (:mod:`ddbcdc.materialize.streamtime`) is the oldest position over *every* shard
that may still bring changes, not only over the shards that have applied something: a shard
nobody has read yet may hold changes older than all the others. So ``ddbcdc worker`` lists
the shards every few seconds and registers them (:func:`~ddbcdc.materialize.progress.
register_shards`); a registered shard whose processor has applied nothing is "not started".

Where the list comes from is a :data:`ShardLister`; the registry takes the union of several,
and registers only when every one of them answered (half a list would drop shards):

- :func:`open_shards`: the shards still open (an open shard always gets read, and a new one
  shows here the moment a reshard or a rollover creates it), from the stream itself
  (:mod:`ddbcdc.aws.streams`): ListShards on Kinesis (:func:`kinesis_open_shards`),
  DescribeStream page by page on a table's DynamoDB stream (:func:`dynamodb_open_shards`);
- :func:`lease_shards`: the KCL lease table, the shards the KCL has not read to their end
  (closed parents still being read included, and whatever the KCL reads from TRIM_HORIZON).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

from ddbcdc.aws.streams import DynamoDBStream, KinesisStream, Stream
from ddbcdc.db import run_transaction
from ddbcdc.materialize.progress import register_shards
from ddbcdc.materialize.streamtime import stream_times
from ddbcdc.worker.liveness import LeaseWatcher

__all__ = [
    "ShardLister",
    "ShardRegistry",
    "dynamodb_open_shards",
    "kinesis_open_shards",
    "lease_shards",
    "open_shards",
]

log = logging.getLogger(__name__)

#: Returns the shard ids to count; raises (or returns None) when it cannot tell now.
ShardLister = Callable[[], "set[str] | None"]


def open_shards(stream: Stream) -> ShardLister:
    """The shards of ``stream`` that are still open (no ending sequence number)."""

    def listed() -> set[str]:
        return {shard.shard_id for shard in stream.shards() if shard.open}

    return listed


def kinesis_open_shards(client: Any, stream: str) -> ShardLister:
    """The open shards of a Kinesis stream (name or ARN), by ListShards."""
    if stream.startswith("arn:"):
        return open_shards(KinesisStream(client, arn=stream))
    return open_shards(KinesisStream(client, name=stream))


def dynamodb_open_shards(client: Any, arn: str) -> ShardLister:
    """The open shards of a table's DynamoDB stream (its ARN), by DescribeStream.

    A DynamoDB stream rolls its shards over about every four hours: the children a rollover
    opens show here on the next round, their closed parents drop out (the lease table still
    counts those until the KCL has read them to their end).
    """
    return open_shards(DynamoDBStream(client, arn))


def lease_shards(watcher: LeaseWatcher) -> ShardLister:
    """The shards of the KCL lease table not read to their end, as the watcher last read it."""

    def listed() -> set[str] | None:
        leases = watcher.leases()
        if leases is None:
            return None
        return {shard for shard, lease in leases.items() if not lease.ended}

    return listed


class ShardRegistry:
    """Lists the shards every ``every_s`` and registers them for one application.

    Each round also raises the stored stream time to the current one, so ``ddbcdc status``
    shows it up to date.

    Args:
        engine: PostgreSQL.
        application: the KCL application.
        listers: where the shards come from (their union is registered).
        every_s: seconds between rounds.
    """

    def __init__(
        self,
        engine: sa.Engine,
        application: str,
        listers: Sequence[ShardLister],
        *,
        every_s: float = 5.0,
    ) -> None:
        self.engine = engine
        self.application = application
        self.listers = tuple(listers)
        self.every_s = every_s
        self._failing = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ddbcdc-shards", daemon=True)

    def listed(self) -> set[str] | None:
        """The union of every lister's shards; None when one of them could not tell."""
        shards: set[str] = set()
        for lister in self.listers:
            try:
                found = lister()
            except Exception as exc:  # AWS briefly unreachable, throttled, ...
                self._warn("shard list not readable: %s", type(exc).__name__)
                return None
            if found is None:
                return None
            shards |= found
        return shards

    def refresh(self) -> bool:
        """One round: list, register, raise the stream time. Whether it registered."""
        shards = self.listed()
        if shards is None:
            return False

        def work(conn: sa.Connection) -> None:
            added = register_shards(conn, self.application, shards)
            if added:
                log.info("shards registered application=%s new=%d", self.application, added)
            stream_times(conn, store=True)

        try:
            run_transaction(self.engine, work)
        except Exception as exc:  # PostgreSQL down: the next round registers
            self._warn("shards not registered: %s", type(exc).__name__)
            return False
        self._failing = False
        return True

    def start(self) -> None:
        """Run a round now, then every ``every_s``, in a daemon thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.every_s + 30)

    def _warn(self, message: str, *args: object) -> None:
        if not self._failing:
            log.warning(message, *args)
        self._failing = True

    def _run(self) -> None:
        while not self._stop.is_set():
            self.refresh()
            self._stop.wait(self.every_s)
