"""The ``ddbcdc`` subcommands, one module each.

Each module defines ``register(subparsers)``, which adds its parser and sets ``func`` (taking
the parsed arguments and returning the exit code).
"""

from __future__ import annotations

import argparse

__all__ = ["amount", "count", "rate", "seconds"]


def count(text: str) -> int:
    """An argparse type: a whole number of at least 1 (``--limit``, ``--batch-size``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def amount(text: str) -> int:
    """An argparse type: a whole number of at least 0 (``--samples``, ``--max-suspects``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, not {value}")
    return value


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def rate(text: str) -> float:
    """An argparse type: a number above 0 (``--max-rcu``, ``--max-items-per-second``)."""
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
    return value


def seconds(text: str) -> float:
    """An argparse type: a number of seconds, at least 0 (``--settle-timeout``)."""
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, not {text}")
    return value
