"""Reading the live table: segmented, consistent Scan pages under a shared read-rate cap.

Every page records the wall-clock time just before its request was first sent
(``request_us``): a consistent read returns every write acknowledged before the request
arrived, so a row read in the page is at least as new as any write before that time. The
cap (:class:`ReadLimiter`) is shared by every segment of a run: in read capacity units
(each page's ``ConsumedCapacity``) or in items per second. Throttling and transient errors
are retried (:func:`ddbcdc.aws.throttle.call_with_backoff`), re-sending the same page; a
page still failing stops the run (it can be resumed).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ddbcdc.aws.throttle import TokenBucket, call_with_backoff
from ddbcdc.backfill.records import now_us

__all__ = ["Page", "ReadLimiter", "scan_pages"]


@dataclass(frozen=True, slots=True)
class Page:
    """One Scan page.

    Attributes:
        items: the items, marshalled (as boto3 returns them: B values as bytes).
        last_key: LastEvaluatedKey, None after the segment's last page.
        request_us: wall-clock epoch microseconds just before the request was sent.
        consumed: read capacity units the page consumed (0.0 when not reported).
    """

    items: list[dict[str, Any]]
    last_key: dict[str, Any] | None
    request_us: int
    consumed: float


class ReadLimiter:
    """A read-rate cap shared by threads: RCU per second, or items per second, or none.

    :meth:`spend` debits what a page cost and sleeps for as long as the budget is in debt,
    so the long-run rate holds however large the pages are.
    """

    def __init__(
        self,
        *,
        max_rcu: float | None = None,
        max_items_per_second: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_rcu is not None and max_items_per_second is not None:
            raise ValueError("give a cap in RCU or in items per second, not both")
        rate = max_rcu if max_rcu is not None else max_items_per_second
        self.by_rcu = max_rcu is not None
        self.rate = rate or 0.0
        self._bucket = TokenBucket(self.rate, burst=max(1.0, self.rate))
        self._lock = threading.Lock()
        self._sleep = sleep

    def spend(self, *, items: int, consumed: float) -> None:
        """Debit one page's cost; wait while the budget is in debt."""
        if self.rate <= 0:
            return
        with self._lock:
            wait = self._bucket.reserve(consumed if self.by_rcu else float(items))
        if wait > 0:
            self._sleep(wait)


def scan_pages(
    client: Any,
    table: str,
    *,
    segment: int,
    total_segments: int,
    start_key: Mapping[str, Any] | None,
    limiter: ReadLimiter,
    page_size: int | None = None,
    stop: threading.Event | None = None,
) -> Iterator[Page]:
    """The pages of one Scan segment from ``start_key`` (None: its start), ConsistentRead.

    Stops early, between pages, when ``stop`` is set.
    """
    request: dict[str, Any] = {
        "TableName": table,
        "ConsistentRead": True,
        "ReturnConsumedCapacity": "TOTAL",
    }
    if total_segments > 1:
        request.update(Segment=segment, TotalSegments=total_segments)
    if page_size:
        request["Limit"] = page_size
    key = dict(start_key) if start_key else None
    what = f"Scan of {table} segment {segment}/{total_segments}"
    while stop is None or not stop.is_set():
        if key is not None:
            request["ExclusiveStartKey"] = key
        started = now_us()
        response = call_with_backoff(client.scan, what, stop, **request)
        consumed = float((response.get("ConsumedCapacity") or {}).get("CapacityUnits") or 0.0)
        items = response.get("Items", [])
        key = response.get("LastEvaluatedKey")
        yield Page(items, key, started, consumed)
        limiter.spend(items=len(items), consumed=consumed)
        if key is None:
            return
