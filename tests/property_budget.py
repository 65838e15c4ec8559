"""How many examples a property test tries.

``make test`` and CI: the number the test names. ``make check``, the edit loop
(``DDBCDC_QUICK_TESTS=1``): a tenth of it, at least 10, so every property still runs, on fewer
examples. Write ``@settings(max_examples=examples(300))``; a test that names no number gets the
profile's (100, or 10 when quick).
"""

from __future__ import annotations

import os

QUICK = os.environ.get("DDBCDC_QUICK_TESTS") == "1"


def examples(full: int) -> int:
    """``full``, or a tenth of it (at least 10) in the quick run."""
    return max(10, full // 10) if QUICK else full
