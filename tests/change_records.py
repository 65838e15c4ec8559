"""Change records for tests, and random valid histories with the state they must end in.

A history is what DynamoDB could have written: per key an INSERT, MODIFYs, REMOVEs, each
REMOVE followed (sometimes) by a re-INSERT, with change times that never go back and many
changes in the same microsecond. Event ids sort in the order of the changes, so within a
microsecond the version order is the order they happened in. Asked to, a REMOVE carries the
item's last image (OldImage, as Kinesis Data Streams for DynamoDB sends it) and some REMOVEs
are DynamoDB's TTL expiring the item (userIdentity Service, dynamodb.amazonaws.com).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from ddbcdc.decode.attributes import marshal
from ddbcdc.schema.deletes import DeletePolicy

__all__ = ["TTL_IDENTITY", "History", "generate_history", "record"]

#: The userIdentity of a REMOVE by DynamoDB's TTL.
TTL_IDENTITY = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}


def record(
    event: str,
    key: dict[str, Any],
    us: int,
    *,
    image: dict[str, Any] | None = None,
    eid: str,
    table: str = "customers",
    sequence: str | None = None,
    old_image: dict[str, Any] | None = None,
    ttl: bool = False,
) -> bytes:
    """One change record in the Kinesis Data Streams for DynamoDB format (JSON bytes); a
    REMOVE with ``old_image`` carries it, one with ``ttl`` is DynamoDB's TTL expiring it."""
    dynamodb: dict[str, Any] = {"ApproximateCreationDateTime": us, "Keys": marshal(key)}
    if event != "REMOVE":
        dynamodb["NewImage"] = marshal({**key, **(image or {})})
    if old_image is not None:
        dynamodb["OldImage"] = marshal({**key, **old_image})
    if sequence is not None:
        dynamodb["SequenceNumber"] = sequence
    return orjson.dumps(
        {
            "awsRegion": "us-east-1",
            "eventID": eid,
            "eventName": event,
            "tableName": table,
            "userIdentity": TTL_IDENTITY if ttl else None,
            "recordFormat": "application/json",
            "dynamodb": dynamodb,
            "eventSource": "aws:dynamodb",
        }
    )


@dataclass
class History:
    """Records in the order they happened, and what PostgreSQL must hold afterwards.

    Attributes:
        records: the change records, in order.
        final: userid -> first_name of every item alive at the end.
        deleted: userids whose last change is a REMOVE.
        removed: per deleted userid, the first_name it had, the REMOVE's time and cause.
    """

    records: list[bytes] = field(default_factory=list)
    final: dict[int, str] = field(default_factory=dict)
    deleted: set[int] = field(default_factory=set)
    removed: dict[int, tuple[str, int, str]] = field(default_factory=dict)

    def rows(self, policy: DeletePolicy) -> dict[int, tuple[str, int | None]]:
        """The live table a mapping of ``policy`` ends with: userid -> (first_name, the
        time of the REMOVE that marks the row, or None)."""
        out: dict[int, tuple[str, int | None]] = {k: (v, None) for k, v in self.final.items()}
        for userid, (name, us, cause) in self.removed.items():
            mode = policy.mode(cause)  # type: ignore[arg-type]
            if mode != "hard":
                out[userid] = (name, us if mode == "soft" else None)
        return out

    def delivery(self, rng: random.Random, *, duplicates: float = 0.3) -> list[bytes]:
        """Every record at least once, some twice, in a random order."""
        extra = [r for r in self.records if rng.random() < duplicates]
        out = [*self.records, *extra]
        rng.shuffle(out)
        return out

    def split(self, rng: random.Random, parts: int, *, overlap: float = 0.3) -> list[list[bytes]]:
        """Deliveries for ``parts`` concurrent appliers: together every record, shuffled,
        a share of them given to two appliers."""
        out: list[list[bytes]] = [[] for _ in range(parts)]
        for r in self.records:
            first = rng.randrange(parts)
            out[first].append(r)
            if parts > 1 and rng.random() < overlap:
                out[(first + rng.randrange(1, parts)) % parts].append(r)
        for part in out:
            rng.shuffle(part)
        return out


def generate_history(
    rng: random.Random,
    *,
    keys: Sequence[int],
    steps: int,
    start_us: int,
    remove_share: float = 0.3,
    prefix: str = "h",
    old_images: bool = False,
    ttl_share: float = 0.0,
) -> History:
    """A random valid history over ``keys`` (see the module doc): with ``old_images`` a
    REMOVE carries the item's last image; ``ttl_share`` of the REMOVEs are TTL expiries."""
    history = History()
    alive = dict.fromkeys(keys, False)
    images: dict[int, dict[str, Any]] = {}
    us = start_us
    for serial in range(steps):
        us += rng.choice((0, 0, 1, 7, 1_000, 86_400_000_000))
        userid = rng.choice(keys)
        if alive[userid] and rng.random() < remove_share:
            event = "REMOVE"
        else:
            event = "MODIFY" if alive[userid] else "INSERT"
        name = f"{prefix}{serial}"
        image = {"first_name": name, "phone": serial}
        ttl = event == "REMOVE" and ttl_share > 0 and rng.random() < ttl_share
        old = images.get(userid) if event == "REMOVE" and old_images else None
        history.records.append(
            record(
                event,
                {"userid": userid},
                us,
                image=image,
                eid=f"{prefix}-{serial:08d}",
                old_image=old,
                ttl=ttl,
            )
        )
        alive[userid] = event != "REMOVE"
        if alive[userid]:
            images[userid] = image
            history.final[userid] = name
            history.deleted.discard(userid)
            history.removed.pop(userid, None)
        else:
            last = history.final.pop(userid)
            history.deleted.add(userid)
            history.removed[userid] = (last, us, "ttl" if ttl else "user")
    return history
