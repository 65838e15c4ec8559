"""Calling AWS at a bounded rate, and again when it says "not now".

- :func:`call_with_backoff`: one request, retried with :class:`ddbcdc.backoff.Backoff` while
  its :class:`~ddbcdc.aws.errors.AwsError` is retryable (throttling, a server's transient
  failure, a connection refused or lost; :mod:`ddbcdc.aws.errors` knows the codes); any
  other error is the caller's to handle;
- :class:`TokenBucket`: steady pacing (the load generator's writes, the read-rate cap of
  snapshot and verify).

Clients built for these loops should not retry by themselves (``max_attempts=1`` or few), so
that what is counted and waited for here is real.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from ddbcdc.aws.errors import AwsError
from ddbcdc.backoff import Backoff
from ddbcdc.errors import RetryableError

__all__ = ["TokenBucket", "call_with_backoff"]

log = logging.getLogger(__name__)

#: Attempts at one request of :func:`call_with_backoff` before it gives up.
MAX_ATTEMPTS = 12
#: Its waits between them.
CALL_BACKOFF = Backoff(initial=0.1, maximum=20.0)


class TokenBucket:
    """Steady pacing: :meth:`reserve` debits tokens now and says how long to wait for them.

    Tokens refill at ``rate`` per second up to ``burst``; a debt is allowed, so callers that
    sleep for the returned time keep the long-run rate exact even when sleeps overshoot.
    A rate of 0 never waits.
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.capacity = burst if burst is not None else max(1.0, rate * 0.05)
        self._clock = clock
        self._tokens = self.capacity
        self._last = clock()

    def reserve(self, tokens: float = 1.0) -> float:
        """Take ``tokens``; return the seconds to wait before using them (0.0 if none)."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now
        self._tokens -= tokens
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


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
            :data:`MAX_ATTEMPTS` attempts (it names the request).
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
        delay = CALL_BACKOFF.delay(attempt, rng=rng.random)
        log.info("%s: %s, retrying in %.2fs (attempt %d)", what, reason, delay, attempt + 1)
        sleep(delay)
    raise AssertionError("unreachable")
