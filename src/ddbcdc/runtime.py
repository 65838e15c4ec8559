"""Interpreter settings for the processes that run the pipeline at full speed.

Decoding and cleansing allocate several containers per change (attribute maps, rows, tuples)
that die young and form no reference cycles. With CPython's default thresholds the cyclic
garbage collector runs every 700 allocations and keeps re-walking everything alive; on a
batch of 5,000 changes that costs a third of the CPU. :func:`tune_gc` moves what start-up
made (modules, mappings, compiled statements) out of the collector's way and collects the
young generation every 50,000 allocations instead: cycles are still collected, later. The
start-up's own garbage is frozen with the rest instead of being collected first (a full
collection there costs ~60 ms of a command's start, the garbage a few hundred kB at most).

Where one thread prepares batches while another waits on PostgreSQL,
:func:`short_switch_interval` hands the interpreter lock to the database thread sooner.
"""

from __future__ import annotations

import contextlib
import gc
import sys
import threading
from collections.abc import Iterator

__all__ = ["SWITCH_INTERVAL_S", "short_switch_interval", "tune_gc"]

#: The interpreter's switch interval while batches are prepared beside a database thread.
SWITCH_INTERVAL_S = 0.0005

_YOUNG_THRESHOLD = 50_000


def tune_gc() -> None:
    """Freeze the objects alive now and raise the young generation's threshold."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(_YOUNG_THRESHOLD, max(middle, 20), max(old, 100))


class _Switch:
    """Who holds the short switch interval, and what to restore when the last one leaves."""

    lock = threading.Lock()
    holders = 0
    saved = 0.005


@contextlib.contextmanager
def short_switch_interval() -> Iterator[None]:
    """A shorter switch interval meanwhile, restored when the last thread holding it leaves.

    The database thread wakes up after each statement (and each part of a COPY) and waits
    for the interpreter lock, which the preparing thread holds until the switch interval
    (5 ms by default) asks it to let go: a shorter interval hands the database its next
    statement sooner.
    """
    with _Switch.lock:
        if _Switch.holders == 0:
            _Switch.saved = sys.getswitchinterval()
            sys.setswitchinterval(SWITCH_INTERVAL_S)
        _Switch.holders += 1
    try:
        yield
    finally:
        with _Switch.lock:
            _Switch.holders -= 1
            if _Switch.holders == 0:
                sys.setswitchinterval(_Switch.saved)
