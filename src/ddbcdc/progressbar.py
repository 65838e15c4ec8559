"""A one-line progress bar on stderr with rate and ETA, for any command that counts work.

The bar redraws in place with ``\\r`` at most every ``min_interval`` seconds; rendering is a
pure function (:func:`format_progress`) so it can be tested without a terminal.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

__all__ = ["ProgressBar", "format_duration", "format_progress"]


def format_duration(seconds: float) -> str:
    """``75.2`` -> ``"1:15"``, ``3725`` -> ``"1:02:05"``."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_progress(
    done: int, total: int | None, elapsed: float, *, label: str = "", width: int = 30
) -> str:
    """One line: label, bar, counts, rate and ETA (the bar and ETA only when total is known).

    Args:
        done: units completed so far.
        total: units expected in all, or None when unknown.
        elapsed: seconds since the work started.
        label: a short prefix, e.g. the command name.
        width: characters of the bar itself.
    """
    rate = done / elapsed if elapsed > 0 else 0.0
    parts = [label] if label else []
    if total:
        fraction = min(1.0, done / total)
        filled = int(fraction * width)
        parts.append("[" + "#" * filled + "-" * (width - filled) + "]")
        parts.append(f"{done}/{total} {fraction:4.0%}")
    else:
        parts.append(f"{done}")
    parts.append(f"{rate:,.0f}/s")
    parts.append(f"elapsed {format_duration(elapsed)}")
    if total and done < total:
        eta = (total - done) / rate if rate > 0 else None
        parts.append(f"ETA {format_duration(eta)}" if eta is not None else "ETA --:--")
    return " ".join(parts)


class ProgressBar:
    """A progress line redrawn in place on a stream (stderr by default).

    Use it as a context manager; call :meth:`update` as often as you like, it throttles itself.
    """

    def __init__(
        self,
        total: int | None,
        *,
        label: str = "",
        stream: TextIO | None = None,
        min_interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.min_interval = min_interval
        self._clock = clock
        self._started = clock()
        self._last_draw: float | None = None
        self._last_len = 0
        self.done = 0

    def update(self, done: int, *, force: bool = False) -> None:
        """Record ``done`` units completed and redraw if enough time has passed."""
        self.done = done
        now = self._clock()
        if not force and self._last_draw is not None and now - self._last_draw < self.min_interval:
            return
        self._last_draw = now
        line = format_progress(done, self.total, now - self._started, label=self.label)
        padding = " " * max(0, self._last_len - len(line))
        self._last_len = len(line)
        self.stream.write("\r" + line + padding)
        self.stream.flush()

    def close(self) -> None:
        """Draw the final state and end the line."""
        self.update(self.done, force=True)
        self.stream.write("\n")
        self.stream.flush()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
