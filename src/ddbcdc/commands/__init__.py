"""The ``ddbcdc`` subcommands, one module each.

Each module defines ``register(subparsers)``, which adds its parser and sets ``func`` (taking
the parsed arguments and returning the exit code).
"""

from __future__ import annotations

import argparse

__all__ = ["amount", "count", "rate", "scan_segments", "seconds", "table_name"]

#: DynamoDB's most Scan segments (TotalSegments).
MAX_SEGMENTS = 1_000_000


def count(text: str) -> int:
    """An argparse type: a whole number of at least 1 (``--limit``, ``--batch-size``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def table_name(text: str) -> str:
    """An argparse type: a DynamoDB table's name (or ARN), never empty (``--table``): an empty
    one would otherwise stand for the default table."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must name a table, not be empty")
    return text


def scan_segments(text: str) -> int:
    """An argparse type: a number of Scan segments, 1 to DynamoDB's 1,000,000."""
    value = count(text)
    if value > MAX_SEGMENTS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_SEGMENTS:,}, not {value:,}")
    return value


def rate(text: str) -> float:
    """An argparse type: a rate above 0 (``--max-rcu``, ``--max-items-per-second``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
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


def seconds(text: str) -> float:
    """An argparse type: a number of seconds, at least 0 (``--settle-timeout``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be at least 0 and finite, not {text}")
    return value
