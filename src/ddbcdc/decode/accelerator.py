"""Which decode path runs: the C speedups or the pure-Python reference, chosen once at import.

``DDBCDC_SPEEDUPS`` picks it:

- unset (or empty): the C extension :mod:`ddbcdc.decode._speedups` when it was built, else
  pure Python;
- ``0``: pure Python, the extension built or not;
- ``1``: the C extension; an :class:`ImportError` naming the cause when it does not import.

Both paths decode every record the same way (the Python code is the reference for every
rule and message, and the extension declines whatever it does not take whole), so the switch
changes speed only: it is for tests and benchmarks that compare the two paths, and for ruling
the extension out.

This is the one environment variable ddbcdc's library code reads (elsewhere settings are
passed down from the edge): like ``PYTHONMALLOC``, an accelerator is chosen before any
caller could pass a setting, since the decoding modules bind its functions when imported.
"""

from __future__ import annotations

import os
from types import ModuleType

__all__ = ["SPEEDUPS", "VARIABLE", "load_speedups"]

#: The environment variable that picks the decode path.
VARIABLE = "DDBCDC_SPEEDUPS"


def load_speedups(choice: str | None = None) -> ModuleType | None:
    """The C extension, or None for pure Python, as ``choice`` (default: the environment
    variable's value) says (see the module doc).

    Raises:
        ImportError: ``choice`` is neither unset, ``0`` nor ``1``; or it is ``1`` and the
            extension does not import (the message names why).
    """
    if choice is None:
        choice = os.environ.get(VARIABLE, "")
    choice = choice.strip()
    if choice == "0":
        return None
    if choice not in ("", "1"):
        raise ImportError(
            f"{VARIABLE}={choice!r}: must be 0 (pure Python), 1 (the C speedups) or unset "
            "(the C speedups when built)"
        )
    try:
        from ddbcdc.decode import _speedups
    except ImportError as exc:
        if choice == "1":
            raise ImportError(
                f"{VARIABLE}=1 but the C extension ddbcdc.decode._speedups does not import "
                f"({exc}): install ddbcdc where a C compiler and the Python headers are "
                f"(e.g. gcc and python3-dev), or unset {VARIABLE}"
            ) from exc
        return None
    return _speedups


#: The C extension in use, or None when decoding runs in pure Python.
SPEEDUPS = load_speedups()
