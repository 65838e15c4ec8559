"""Reading the live table: segmented, consistent Scan pages under a shared read-rate cap.

Every page records the wall-clock time just before its request was first sent
(``request_us``): a consistent read returns every write acknowledged before the request
arrived, so a row read in the page is at least as new as any write before that time. The
cap (:class:`ReadLimiter`) is shared by every segment of a run: in read capacity units
(each page's ``ConsumedCapacity``) or in items per second. Throttling and transient errors
are retried with capped, jittered exponential backoff, re-sending the same page.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ddbcdc.aws.errors import AwsError
from ddbcdc.backfill.records import now_us
from ddbcdc.errors import RetryableError
from ddbcdc.load.writer import TokenBucket, backoff_delay

__all__ = ["Page", "ReadLimiter", "call_with_backoff", "scan_pages"]

log = logging.getLogger(__name__)

#: Attempts at one request before the run stops (it can be resumed).
MAX_ATTEMPTS = 12


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


def call_with_backoff(
    call: Callable[..., Any],
    what: str,
    stop: threading.Event | None = None,
    *,
    rng: random.Random | None = None,
    sleep: Callable[[float], None] = time.sleep,
    **request: Any,
) -> Any:
    """``call(**request)``, retried on throttling and transient errors.

    Raises:
        RetryableError: stopped (``stop`` set).
        AwsError: any other error of the service, or a retryable one still failing after
            :data:`MAX_ATTEMPTS` attempts.
    """
    rng = rng or random.Random()
    for attempt in range(MAX_ATTEMPTS):
        if stop is not None and stop.is_set():
            raise RetryableError(f"{what}: stopped")
        try:
            return call(**request)
        except AwsError as exc:
            if not exc.retryable or attempt + 1 == MAX_ATTEMPTS:
                raise
            reason = exc.code
        delay = backoff_delay(attempt, rng, base=0.1, cap=20.0)
        log.info("%s: %s, retrying in %.2fs (attempt %d)", what, reason, delay, attempt + 1)
        sleep(delay)
    raise AssertionError("unreachable")


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
