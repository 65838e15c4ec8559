"""A fake KCL MultiLangDaemon for driving record processors in memory (no Java).

It plays the daemon's ends of the processor's stdin and stdout, as amazon_kclpy's own tests
do: it feeds actions one at a time (the next only once the processor has asked for input after
reporting the previous one done) and answers checkpoint requests, with errors on demand.

Its :attr:`FakeDaemon.journal` is the order of events on both sides: every checkpoint request
the processor sends, and whatever the test's stand-in for the pipeline notes there
(:meth:`FakeDaemon.note`: a batch committed or failed), so a test can assert that a
checkpoint never comes before the commit of the records it covers.
"""

from __future__ import annotations

import base64
import json
from collections import deque
from collections.abc import Iterable
from typing import Any

SHARD = "shardId-000000000001"


def record(seq: int, data: bytes = b"{}", key: str = "pk") -> dict[str, Any]:
    """A record as the daemon's JsonFriendlyRecord serialises it."""
    return {
        "action": "record",
        "data": base64.b64encode(data).decode(),
        "partitionKey": key,
        "sequenceNumber": str(seq),
        "subSequenceNumber": None,
        "approximateArrivalTimestamp": 1_700_000_000_000,
    }


def initialize(shard: str = SHARD) -> dict[str, Any]:
    return {
        "action": "initialize",
        "shardId": shard,
        "sequenceNumber": "TRIM_HORIZON",
        "subSequenceNumber": 0,
    }


def process(*seqs: int, behind: int | None = 5) -> dict[str, Any]:
    return {
        "action": "processRecords",
        "millisBehindLatest": behind,
        "records": [record(s, data=f'{{"n":{s}}}'.encode(), key=f"k{s}") for s in seqs],
    }


class FakeDaemon:
    """The daemon's ends of the processor's stdin and stdout."""

    def __init__(self, actions: Iterable[dict[str, Any]], checkpoint_errors: Iterable[str] = ()):
        self.actions = deque(json.dumps(a) + "\n" for a in actions)
        self.replies: deque[str] = deque()
        self.checkpoint_errors = deque(checkpoint_errors)
        self.received: list[dict[str, Any]] = []
        self.journal: list[tuple[str, str | None]] = []

    def note(self, event: str, detail: str | None = None) -> None:
        """Record an event of the processor's other side (``("commit", last sequence)``)."""
        self.journal.append((event, detail))

    # stdin of the processor
    def readline(self) -> str:
        if self.replies:
            return self.replies.popleft()
        if self.actions:
            return self.actions.popleft()
        return ""

    # stdout of the processor
    def write(self, text: str) -> int:
        for line in text.splitlines():
            if not line.strip():
                continue
            message = json.loads(line)  # anything but JSON on stdout breaks the protocol
            self.received.append(message)
            if message["action"] == "checkpoint":
                self.note("checkpoint", message["sequenceNumber"])
                error = self.checkpoint_errors.popleft() if self.checkpoint_errors else None
                reply = {
                    "action": "checkpoint",
                    "sequenceNumber": message["sequenceNumber"],
                    "subSequenceNumber": message["subSequenceNumber"],
                }
                if error:
                    reply["error"] = error
                self.replies.append(json.dumps(reply) + "\n")
        return len(text)

    def flush(self) -> None:
        pass

    @property
    def checkpoints(self) -> list[str | None]:
        return [m["sequenceNumber"] for m in self.received if m["action"] == "checkpoint"]

    @property
    def statuses(self) -> list[str]:
        return [m["responseFor"] for m in self.received if m["action"] == "status"]


class Discard:
    """An error stream that drops everything."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass
