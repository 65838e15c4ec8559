"""The ``ddbcdc`` subcommands, one module each.

Each module defines ``register(subparsers)``, which adds its parser and sets ``func`` (taking
the parsed arguments and returning the exit code).
"""

from __future__ import annotations

import argparse

__all__ = ["amount", "count", "rate", "scan_segments", "seconds", "table_name"]

#: DynamoDB's most Scan segments (TotalSegments).
MAX_SEGMENTS = 1_000_000


def _whole(text: str, least: int) -> int:
    """``text`` as a whole number of at least ``least``, or the usage error saying why."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, not {value}")
    return value


def _number(text: str) -> float:
    """``text`` as a number, or the usage error saying it is none (bounds: the caller's)."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def count(text: str) -> int:
    """An argparse type: a whole number of at least 1 (``--limit``, ``--batch-size``)."""
    return _whole(text, 1)


def amount(text: str) -> int:
    """An argparse type: a whole number of at least 0 (``--samples``, ``--max-suspects``)."""
    return _whole(text, 0)


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
    value = _number(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
    return value


def seconds(text: str) -> float:
    """An argparse type: a number of seconds, at least 0 (``--settle-timeout``)."""
    value = _number(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be at least 0 and finite, not {text}")
    return value
