"""DynamoDB's Time to Live on the local stack: expired items deleted as the service does it.

moto records a table's TTL setting (UpdateTimeToLive, DescribeTimeToLive) but never expires
an item, and its stream records carry no userIdentity. Whatever process serves the local
stack's stream therefore runs a :class:`TtlSweeper` per table: the bridge one per bridged
table, the DynamoDB Streams front one per stream's table (:class:`TtlSweepers`). While the
table's TTL is ENABLED, every ``interval``
seconds it scans for items whose TTL attribute (a number, epoch seconds) is at or before now,
and deletes each with the condition that the attribute still holds the value read (an item
written again meanwhile is not deleted). As in AWS, an attribute that is not a number, or a
time more than five years past, never expires.

Each deletion is entered in the :class:`Expiries` ledger before it is made (and withdrawn
when the condition fails). The reader of the stream takes the ledger entry of a REMOVE of the
same key whose OldImage holds the TTL value deleted, and stamps that REMOVE with the identity
DynamoDB's own deletions carry: the bridge in the Kinesis Data Streams for DynamoDB form,
``userIdentity {"type": "Service", "principalId": "dynamodb.amazonaws.com"}``
(:data:`TTL_IDENTITY`), the front in the form of the DynamoDB Streams GetRecords API,
``userIdentity {"PrincipalId": "dynamodb.amazonaws.com", "Type": "Service"}``
(:data:`TTL_STREAMS_IDENTITY`). Every other REMOVE goes on without one, as a user's. (A user's
delete of the same expired item between the entry and the sweeper's delete would be stamped
instead: the local stack's only approximation.)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ddbcdc.decode.envelope import TTL_PRINCIPAL
from ddbcdc.local.awsjson import AwsApiError, JsonApiClient
from ddbcdc.local.bridge_format import partition_key

__all__ = ["TTL_IDENTITY", "TTL_STREAMS_IDENTITY", "Expiries", "TtlSweeper", "TtlSweepers"]

log = logging.getLogger(__name__)

#: The userIdentity of a REMOVE by DynamoDB's TTL (Kinesis Data Streams for DynamoDB form).
TTL_IDENTITY = {"type": "Service", "principalId": TTL_PRINCIPAL}
#: The same identity as the DynamoDB Streams API serves it (its ``Identity`` shape).
TTL_STREAMS_IDENTITY = {"PrincipalId": TTL_PRINCIPAL, "Type": "Service"}
#: Items whose TTL is further in the past than this are never expired (as in AWS).
_OLDEST_S = 5 * 365 * 24 * 3600
_SETTING_EVERY_S = 2.0


class Expiries:
    """The deletions the sweepers are making, until the bridge sees their REMOVEs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: (table, partition key of the item) -> the (TTL attribute, value) of each deletion.
        self._pending: dict[tuple[str, str], list[tuple[str, Any]]] = {}

    def expect(self, table: str, keys: Mapping[str, Any], attribute: str, value: Any) -> None:
        """A sweeper is about to delete the item ``keys`` whose ``attribute`` is ``value``."""
        with self._lock:
            self._pending.setdefault((table, partition_key(keys)), []).append((attribute, value))

    def withdraw(self, table: str, keys: Mapping[str, Any], attribute: str, value: Any) -> None:
        """The deletion did not happen."""
        self._take(table, keys, lambda a, v: (a, v) == (attribute, value))

    def is_expiry(self, table: str, record: Mapping[str, Any]) -> bool:
        """Whether a DynamoDB Streams record (wire JSON) is a sweeper's REMOVE (which is then
        no longer pending): one of its key whose OldImage holds the TTL value deleted."""
        if record.get("eventName") != "REMOVE":
            return False
        source = record["dynamodb"]
        old = source.get("OldImage") or {}
        return self._take(table, source["Keys"], lambda a, v: old.get(a) == v)

    def _take(self, table: str, keys: Mapping[str, Any], match: Callable[[str, Any], bool]) -> bool:
        slot = (table, partition_key(keys))
        with self._lock:
            entries = self._pending.get(slot, [])
            for index, (attribute, value) in enumerate(entries):
                if match(attribute, value):
                    del entries[index]
                    if not entries:
                        del self._pending[slot]
                    return True
        return False


class TtlSweeper(threading.Thread):
    """Expires the items of one table while its TTL is enabled (see the module doc).

    Args:
        table: the table name.
        endpoint: moto's URL.
        region: the region of the table.
        expiries: the ledger the bridge reads.
        interval: seconds between sweeps.
        stop: set to end the thread.
    """

    def __init__(
        self,
        table: str,
        *,
        endpoint: str,
        region: str,
        expiries: Expiries,
        interval: float,
        stop: threading.Event,
    ) -> None:
        super().__init__(name=f"ttl-sweeper-{table}", daemon=True)
        self.table = table
        self.expiries = expiries
        self.interval = interval
        self.expired = 0
        #: The TTL attribute while TTL is enabled, else None (read every few seconds).
        self.attribute: str | None = None
        self._stop_event = stop
        self._client = JsonApiClient("dynamodb", endpoint, region=region)
        self._key_names: list[str] = []
        self._setting_read = 0.0

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self._read_setting()
                if self.attribute is not None:
                    self.sweep(time.time())
            except AwsApiError as exc:
                if exc.code == "ResourceNotFoundException":
                    break  # the table is gone
                log.warning("expiring items of %s: %s", self.table, exc)
            except Exception:  # the thread's boundary: the next sweep tries again
                log.exception("expiring items of %s failed", self.table)
            self._stop_event.wait(self.interval)
        self._client.close()

    def _read_setting(self) -> None:
        if time.monotonic() - self._setting_read < _SETTING_EVERY_S:
            return
        self._setting_read = time.monotonic()
        answer = self._client.call("DescribeTimeToLive", {"TableName": self.table})
        described = answer.get("TimeToLiveDescription") or {}
        enabled = described.get("TimeToLiveStatus") == "ENABLED"
        self.attribute = described.get("AttributeName") if enabled else None
        if not self._key_names:
            table = self._client.call("DescribeTable", {"TableName": self.table})["Table"]
            self._key_names = [k["AttributeName"] for k in table["KeySchema"]]

    def _candidates(self) -> list[dict[str, Any]]:
        """Every item's key and TTL attribute (the filter is applied here: an expression
        comparing a number with an attribute of another type fails in moto)."""
        names = {f"#k{i}": name for i, name in enumerate(self._key_names)}
        names["#ttl"] = str(self.attribute)
        request: dict[str, Any] = {
            "TableName": self.table,
            "ConsistentRead": True,
            "ProjectionExpression": ", ".join(names),
            "ExpressionAttributeNames": names,
        }
        items: list[dict[str, Any]] = []
        while True:
            page = self._client.call("Scan", request)
            items += page.get("Items", [])
            if not page.get("LastEvaluatedKey"):
                return items
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def sweep(self, now: float) -> int:
        """Delete every item expired at ``now`` (epoch seconds); how many were deleted."""
        attribute = self.attribute
        assert attribute is not None
        deleted = 0
        for item in self._candidates():
            value = item.get(attribute)
            if not isinstance(value, dict) or "N" not in value:
                continue  # not a number: never expires
            if not now - _OLDEST_S <= float(value["N"]) <= now:
                continue
            keys = {name: item[name] for name in self._key_names}
            self.expiries.expect(self.table, keys, attribute, value)
            try:
                self._client.call(
                    "DeleteItem",
                    {
                        "TableName": self.table,
                        "Key": keys,
                        "ConditionExpression": "#ttl = :seen",
                        "ExpressionAttributeNames": {"#ttl": attribute},
                        "ExpressionAttributeValues": {":seen": value},
                    },
                )
            except AwsApiError as exc:
                self.expiries.withdraw(self.table, keys, attribute, value)
                if exc.code != "ConditionalCheckFailedException":
                    raise
                continue
            deleted += 1
        self.expired += deleted
        return deleted


class TtlSweepers:
    """A :class:`TtlSweeper` per table, every one entering :attr:`expiries`.

    Args:
        endpoint: moto's URL.
        region: the region of the tables.
        interval: seconds between sweeps.
    """

    def __init__(self, *, endpoint: str, region: str, interval: float) -> None:
        self.expiries = Expiries()
        self._endpoint, self._region, self._interval = endpoint, region, interval
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        self._sweepers: dict[str, TtlSweeper] = {}

    def ensure(self, tables: Iterable[str]) -> None:
        """Start a sweeper for each of ``tables`` that has none running (a sweeper ends when
        its table is gone; a table made again under the name gets a new one)."""
        with self._lock:
            if self._stop_event.is_set():
                return
            for table in tables:
                running = self._sweepers.get(table)
                if running is not None and running.is_alive():
                    continue
                sweeper = TtlSweeper(
                    table,
                    endpoint=self._endpoint,
                    region=self._region,
                    expiries=self.expiries,
                    interval=self._interval,
                    stop=self._stop_event,
                )
                self._sweepers[table] = sweeper
                sweeper.start()

    def expired(self) -> dict[str, int]:
        """Per table: the items its sweepers have expired (the latest sweeper's count)."""
        with self._lock:
            return {table: sweeper.expired for table, sweeper in self._sweepers.items()}

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every sweeper and wait for each (it finishes its current call first)."""
        with self._lock:
            self._stop_event.set()
            sweepers = list(self._sweepers.values())
        for sweeper in sweepers:
            sweeper.join(timeout)
