"""tune_gc: what start-up made is frozen, the young generation collected far less often."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from ddbcdc.runtime import tune_gc


@pytest.fixture
def restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_tune_gc_freezes_and_raises_the_young_threshold(restore_gc: None) -> None:
    gc.unfreeze()
    tune_gc()
    assert gc.get_freeze_count() > 0
    young, middle, old = gc.get_threshold()
    assert young == 50_000 and middle >= 20 and old >= 100
    cycle: list[object] = []
    cycle.append(cycle)
    del cycle
    assert gc.collect() >= 1  # cycles are still collected
