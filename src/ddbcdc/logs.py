"""Log and report lines that stay lines.

A message can carry text from the stream: an attribute name in an error's path may hold a
newline, a NUL or a terminal escape. :class:`LineFormatter` writes every control character of
a message as a ``\\xNN`` escape, so a record can neither break a log line nor forge one (and
:func:`one_line` does the same for a command's report lines). A traceback (``--log-level
DEBUG``) keeps its lines.
"""

from __future__ import annotations

import logging

__all__ = ["LineFormatter", "one_line"]

_CONTROL = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F)}


def one_line(text: str) -> str:
    """``text`` with its control characters as ``\\xNN`` escapes."""
    return text.translate(_CONTROL)


class LineFormatter(logging.Formatter):
    """A :class:`logging.Formatter` whose messages are one line of printable text."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = one_line(record.message)
        return super().formatMessage(record)
