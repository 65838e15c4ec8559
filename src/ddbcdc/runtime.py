"""Interpreter settings for the processes that run the pipeline at full speed.

Decoding and cleansing allocate several containers per change (attribute maps, rows, tuples)
that die young and form no reference cycles. With CPython's default thresholds the cyclic
garbage collector runs every 700 allocations and keeps re-walking everything alive; on a
batch of 5,000 changes that costs a third of the CPU. :func:`tune_gc` moves what start-up
made (modules, mappings, compiled statements) out of the collector's way and collects the
young generation every 50,000 allocations instead: cycles are still collected, later. The
start-up's own garbage is frozen with the rest instead of being collected first (a full
collection there costs ~60 ms of a command's start, the garbage a few hundred kB at most).
"""

from __future__ import annotations

import gc

__all__ = ["tune_gc"]

_YOUNG_THRESHOLD = 50_000


def tune_gc() -> None:
    """Freeze the objects alive now and raise the young generation's threshold."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(_YOUNG_THRESHOLD, max(middle, 20), max(old, 100))
