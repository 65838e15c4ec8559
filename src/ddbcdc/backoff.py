"""How long to wait before trying again: the one backoff formula of every retry loop. Pure.

Capped exponential backoff with "equal jitter": before retry ``n`` (0-based) the base is
``min(maximum, initial * multiplier**n)`` and the delay is uniform in ``[base/2, base]``.
Half fixed, so a retry never comes at once after a failure; half random, so processes that
failed together do not retry together. The shard processor, the transaction runner, the AWS
calls and the load generator each pick their ``initial`` and ``maximum``; the formula is this
one.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with "equal jitter" (half fixed, half random).

    Args:
        initial: delay before the first retry, seconds.
        maximum: cap on the delay, seconds.
        multiplier: growth per attempt.
    """

    initial: float = 0.2
    maximum: float = 30.0
    multiplier: float = 2.0

    def delay(self, attempt: int, *, rng: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        base = min(self.maximum, self.initial * self.multiplier ** min(attempt, 64))
        return base / 2 + rng() * base / 2
