"""What the load generator plans: operations on a key space, and the key space itself.

Shared by the models of :mod:`ddbcdc.load.plan` (customers) and :mod:`ddbcdc.load.shop`
(a single-table design). Pure.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

__all__ = ["OPS", "KeySpace", "OpKind", "Operation", "choose_kind"]

OpKind = Literal["insert", "modify", "remove"]
OPS: tuple[OpKind, ...] = get_args(OpKind)


@dataclass(frozen=True, slots=True)
class Operation:
    """One planned write.

    Attributes:
        index: position in the plan, from 0.
        kind: what it does (after fallbacks).
        key: the ``userid`` (of another model: the number of its key, ``keys``).
        item: the whole item after the write (insert, modify), None for remove.
        changed: the attributes a modify changed, in a stable order.
        keys: the item's DynamoDB key when it is not ``{"userid": key}``.
    """

    index: int
    kind: OpKind
    key: int
    item: Mapping[str, Any] | None
    changed: tuple[str, ...] = ()
    keys: Mapping[str, Any] | None = None


class KeySpace:
    """Which keys are present (of 1..size, and any existing ones), with O(1) random choice
    and removal; deterministic."""

    def __init__(self, size: int, existing: Iterable[int]) -> None:
        self.size = size
        self.present: list[int] = []
        self._position: dict[int, int] = {}
        for key in existing:
            self.add(key)
        self._absent_in_range = size - sum(1 for k in self.present if 1 <= k <= size)

    def add(self, key: int) -> None:
        self._position[key] = len(self.present)
        self.present.append(key)

    def discard(self, key: int) -> None:
        index = self._position.pop(key)
        last = self.present.pop()
        if index < len(self.present):
            self.present[index] = last
            self._position[last] = index

    def has_absent(self) -> bool:
        return self._absent_in_range > 0

    def pick_present(self, rng: random.Random) -> int:
        return self.present[rng.randrange(len(self.present))]

    def pick_absent(self, rng: random.Random) -> int:
        # Rejection sampling is uniform and fast while the space is sparse; when it is dense,
        # probe forward from the last candidate (deterministic, always terminates).
        candidate = rng.randint(1, self.size)
        for _ in range(8):
            if candidate not in self._position:
                return candidate
            candidate = rng.randint(1, self.size)
        while candidate in self._position:
            candidate = candidate % self.size + 1
        return candidate

    def inserted(self, key: int) -> None:
        self.add(key)
        if 1 <= key <= self.size:
            self._absent_in_range -= 1

    def removed(self, key: int) -> None:
        self.discard(key)
        if 1 <= key <= self.size:
            self._absent_in_range += 1


def choose_kind(
    rng: random.Random, space: KeySpace, kinds: list[OpKind], weights: list[int]
) -> OpKind:
    """The next operation: drawn by weight, an insert when nothing is present, a modify when
    nothing is absent."""
    kind = rng.choices(kinds, weights)[0]
    if kind != "insert" and not space.present:
        return "insert"
    if kind == "insert" and not space.has_absent():
        return "modify"
    return kind
