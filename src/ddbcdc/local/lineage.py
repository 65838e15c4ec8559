"""Shard lineage over one ordered list of records, for the local DynamoDB Streams front. Pure.

moto keeps a table's stream as one shard that never closes. The front shows it the way
DynamoDB does: ``shards`` shards at first, each holding the changes of the items whose key
hashes to it, and **generations** after that: a rollover closes every open shard at the
current end of the records and opens one child per shard (a split: two, dividing its keys),
whose ``ParentShardId`` is the closed shard. So every item's changes stay in order along
its lineage, parents closed before children begin, as DynamoDB promises.

Positions are indices into the list of records (moto's order, the order of the writes). A
record at position ``p`` belongs to the generation whose ``[start, end)`` holds ``p`` and,
in it, to the shard ``hash(keys) % modulus``. Sequence numbers are
``(generation + 1) * 10**20 + p``: 21+ digits as DynamoDB's, increasing along every lineage
(each child starts above where its parent ended), and within a shard.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = ["Generation", "Lineage", "key_hash"]

_SEQUENCE_BASE = 10**20


def key_hash(keys: Mapping[str, Any]) -> int:
    """A stable hash of a record's ``Keys`` (the same in every process)."""
    digest = hashlib.md5(orjson.dumps(keys, option=orjson.OPT_SORT_KEYS)).digest()  # noqa: S324
    return int.from_bytes(digest[:8], "big")


@dataclass
class Generation:
    """The shards created at one moment: ``modulus`` of them, over ``[start, end)``."""

    number: int
    modulus: int
    start: int
    created_ms: int
    shard_ids: list[str]
    parents: list[str | None]
    end: int | None = None

    @property
    def open(self) -> bool:
        return self.end is None

    def sequence(self, position: int) -> str:
        """The sequence number of the record at ``position`` in this generation."""
        return str((self.number + 1) * _SEQUENCE_BASE + position)

    def position(self, sequence: str) -> int | None:
        """The position of ``sequence``, None when it is not of this generation."""
        if not sequence.isdigit():
            return None
        number, position = divmod(int(sequence), _SEQUENCE_BASE)
        return position if number == self.number + 1 else None


@dataclass
class Lineage:
    """Every generation of one stream.

    Args:
        stream_arn: the stream (it seeds the shard ids).
        shards: the first generation's shard count.
        created_ms: when the first generation was created (epoch milliseconds).
    """

    stream_arn: str
    shards: int
    created_ms: int
    generations: list[Generation] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.shards < 1:
            raise ValueError("a stream has at least one shard")
        if not self.generations:
            self.generations.append(self._generation(0, self.shards, 0, self.created_ms, None))

    def _shard_id(self, number: int, index: int, created_ms: int) -> str:
        seed = f"{self.stream_arn}/{number}/{index}".encode()
        suffix = hashlib.sha1(seed).hexdigest()[:8]  # noqa: S324 - an id, not a secret
        return f"shardId-{created_ms:020d}-{suffix}"

    def _generation(
        self, number: int, modulus: int, start: int, created_ms: int, parent: Generation | None
    ) -> Generation:
        ids = [self._shard_id(number, i, created_ms) for i in range(modulus)]
        parents: list[str | None] = [None] * modulus
        if parent is not None:
            parents = [parent.shard_ids[i % parent.modulus] for i in range(modulus)]
        return Generation(number, modulus, start, created_ms, ids, parents)

    @property
    def current(self) -> Generation:
        return self.generations[-1]

    def roll(self, position: int, *, created_ms: int, split: bool = False) -> Generation:
        """Close the open shards at ``position`` (records from there on go to the children);
        open one child per shard, or two with ``split``. Returns the new generation."""
        old = self.current
        if position < old.start:
            raise ValueError("a rollover cannot end a generation before it began")
        created_ms = max(created_ms, old.created_ms + 1)  # shard ids keep their order
        old.end = position
        modulus = old.modulus * 2 if split else old.modulus
        new = self._generation(old.number + 1, modulus, position, created_ms, old)
        self.generations.append(new)
        return new

    def find(self, shard_id: str) -> tuple[Generation, int] | None:
        """The generation and index of ``shard_id``, None when it is not a shard of this stream."""
        for generation in self.generations:
            if shard_id in generation.shard_ids:
                return generation, generation.shard_ids.index(shard_id)
        return None

    def children(self, shard_id: str) -> list[str]:
        """The shards whose parent is ``shard_id``."""
        return [
            child
            for generation in self.generations
            for child, parent in zip(generation.shard_ids, generation.parents, strict=True)
            if parent == shard_id
        ]

    def describe(self) -> list[dict[str, Any]]:
        """Every shard in the DynamoDB Streams ``Shard`` shape, parents first."""
        shards = []
        for generation in self.generations:
            numbers = {"StartingSequenceNumber": generation.sequence(generation.start)}
            if generation.end is not None:
                # The range of possible numbers: an empty generation ends where it starts.
                last = max(generation.start, generation.end - 1)
                numbers["EndingSequenceNumber"] = generation.sequence(last)
            for shard_id, parent in zip(generation.shard_ids, generation.parents, strict=True):
                shard: dict[str, Any] = {"ShardId": shard_id, "SequenceNumberRange": numbers}
                if parent is not None:
                    shard["ParentShardId"] = parent
                shards.append(shard)
        return shards
