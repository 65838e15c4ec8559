"""The load generator: random customers written to the source table, then changes to them.

Two halves, kept apart:

* planning (pure, no I/O): :func:`plan_operations` turns :class:`LoadOptions` into a
  reproducible stream of :class:`Operation` (same options and seed, same operations), and
  :func:`expected_state` folds operations into the table they should leave behind;
* writing (I/O): :func:`run_load` executes operations against DynamoDB, see ``ddbcdc.load.writer``.

Operation semantics, with the fallbacks that keep every operation meaningful:

* ``insert`` puts a key that is not present. When every key of the key space is present, it
  becomes a ``modify`` of a random present key.
* ``modify`` rewrites one to three attributes of a present key (``first_name``, ``last_name``,
  ``phone``), each to a different value. On an empty table it becomes an ``insert``.

With ``new_attribute`` (``ddbcdc load --new-attribute city``) every insert also writes that
attribute (a city name, S) and modifies may change it too: how a table gains an attribute its
mapping does not name yet.
* ``remove`` deletes a present key. On an empty table it becomes an ``insert``.

With ``ttl_attribute`` (``ddbcdc load --ttl-attribute expires_at --ttl-seconds 60``) every
insert and modify also writes that attribute: the time of the write plus ``ttl_seconds``, in
epoch seconds (a table with Time to Live on it expires the item then). It is added when the
write is sent (``ddbcdc.load.writer``), so the plan stays pure.

The planner starts from an empty table unless it is given the existing items
(``ddbcdc load --scan-first``). Keys are ``1..keys``; existing keys outside that range are
modified and removed like any other.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ddbcdc.aws.resources import KEY_ATTRIBUTE
from ddbcdc.errors import ConfigurationError
from ddbcdc.load.ops import OPS, KeySpace, Operation, OpKind, choose_kind
from ddbcdc.load.shop import plan_shop

__all__ = [
    "DEFAULT_MIX",
    "MODELS",
    "OPS",
    "Item",
    "LoadOptions",
    "OpKind",
    "Operation",
    "expected_state",
    "format_mix",
    "new_seed",
    "parse_mix",
    "plan_operations",
]

MUTABLE_ATTRIBUTES = ("first_name", "last_name", "phone")
#: The table models the generator writes (see :class:`LoadOptions`).
MODELS = ("customers", "single-table")
DEFAULT_MIX: Mapping[OpKind, int] = {"insert": 60, "modify": 30, "remove": 10}
MAX_BATCH = 25  # BatchWriteItem's limit

Item = dict[str, Any]

_FIRST_NAMES = (
    "Ada", "Alan", "Barbara", "Claude", "Dennis", "Edsger", "Frances", "Grace", "Hedy", "Ivan",
    "Jean", "John", "Ken", "Leslie", "Linus", "Margaret", "Niklaus", "Radia", "Shafi", "Tim",
)  # fmt: skip
_CITIES = (
    "Amsterdam", "Berlin", "Cairo", "Delhi", "Edinburgh", "Florence", "Geneva", "Helsinki",
    "Istanbul", "Jakarta", "Kyoto", "Lagos", "Montreal", "Nairobi", "Oslo", "Porto",
)  # fmt: skip
_LAST_NAMES = (
    "Allen", "Backus", "Cerf", "Dijkstra", "Engelbart", "Goldwasser", "Hamilton", "Hopper",
    "Kahn", "Knuth", "Lamarr", "Lamport", "Liskov", "Lovelace", "Perlman", "Ritchie", "Shannon",
    "Sutherland", "Thompson", "Turing", "Wirth",
)  # fmt: skip


def new_seed() -> int:
    """A fresh random seed, to be reported so the run can be repeated."""
    return random.SystemRandom().randrange(2**32)


def parse_mix(text: str) -> dict[OpKind, int]:
    """Parse ``"insert=60,modify=30,remove=10"`` into weights per operation.

    Omitted operations weigh 0. Weights are non-negative integers and must not all be 0.

    Raises:
        ConfigurationError: naming the offending part.
    """
    weights: dict[OpKind, int] = dict.fromkeys(OPS, 0)
    seen: set[str] = set()
    for raw in text.split(","):
        part = raw.strip()
        name, sep, value = (s.strip() for s in part.partition("="))
        if not sep or not name or not value:
            raise ConfigurationError(f"mix part {part!r} is not op=weight (e.g. insert=60)")
        if name not in OPS:
            raise ConfigurationError(f"mix: unknown operation {name!r}; known: {', '.join(OPS)}")
        if name in seen:
            raise ConfigurationError(f"mix: {name!r} given twice")
        if not (value.isascii() and value.isdigit()):
            raise ConfigurationError(f"mix: weight of {name!r} must be an integer >= 0: {value!r}")
        seen.add(name)
        weights[name] = int(value)
    if sum(weights.values()) <= 0:
        raise ConfigurationError("mix: the weights must not all be 0")
    return weights


def format_mix(mix: Mapping[OpKind, int]) -> str:
    """The inverse of :func:`parse_mix`."""
    return ",".join(f"{op}={mix.get(op, 0)}" for op in OPS)


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """What to load, how much and how fast.

    Attributes:
        table: the DynamoDB table written to.
        count: total number of writes.
        keys: size of the key space (``userid`` 1..keys).
        mix: relative weights of insert, modify and remove.
        seed: the random seed; a fresh one when not given (read it back to repeat a run).
        rate: writes per second, steady; 0 means as fast as possible.
        workers: writer threads; a key always goes to the same one, so per-key order holds.
        batch_size: operations per BatchWriteItem (1..25).
        modify_with_update: send modifies as UpdateItem (unbatched) instead of PutItem.
        new_attribute: an attribute (S, a city) every insert writes and modifies may change.
        model: ``customers``, or ``single-table`` (:mod:`ddbcdc.load.shop`: ``keys``
            customers with their orders and lines in one table).
        ttl_attribute: an attribute every insert and modify sets to its write time plus
            ``ttl_seconds`` (N, epoch seconds).
        ttl_seconds: how long after its last write an item expires.
    """

    table: str = "customers"
    count: int = 1000
    keys: int = 1000
    mix: Mapping[OpKind, int] = field(default_factory=lambda: dict(DEFAULT_MIX))
    seed: int = field(default_factory=new_seed)
    rate: float = 0.0
    workers: int = 4
    batch_size: int = MAX_BATCH
    modify_with_update: bool = False
    new_attribute: str | None = None
    model: str = "customers"
    ttl_attribute: str | None = None
    ttl_seconds: float | None = None

    @property
    def attributes(self) -> tuple[str, ...]:
        """The attributes inserts write and modifies change (the key aside)."""
        extra = (self.new_attribute,) if self.new_attribute else ()
        return (*MUTABLE_ATTRIBUTES, *extra)

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ConfigurationError(f"count must be >= 0, got {self.count}")
        if self.keys < 1:
            raise ConfigurationError(f"keys must be >= 1, got {self.keys}")
        if self.rate < 0:
            raise ConfigurationError(f"rate must be >= 0, got {self.rate}")
        if self.workers < 1:
            raise ConfigurationError(f"workers must be >= 1, got {self.workers}")
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise ConfigurationError(f"batch size must be 1..{MAX_BATCH}, got {self.batch_size}")
        parse_mix(format_mix(self.mix))  # same validation as the command line
        if self.model not in MODELS:
            raise ConfigurationError(f"model must be one of {', '.join(MODELS)}: {self.model!r}")
        if self.new_attribute is not None and (
            not self.new_attribute or self.new_attribute in (KEY_ATTRIBUTE, *MUTABLE_ATTRIBUTES)
        ):
            raise ConfigurationError(
                f"new attribute must be a name other than {KEY_ATTRIBUTE!r} and "
                f"{', '.join(MUTABLE_ATTRIBUTES)}, got {self.new_attribute!r}"
            )
        self._check_ttl()

    def _check_ttl(self) -> None:
        if (self.ttl_attribute is None) != (self.ttl_seconds is None):
            raise ConfigurationError("--ttl-attribute and --ttl-seconds go together")
        if self.ttl_attribute is not None and (
            not self.ttl_attribute or self.ttl_attribute in (KEY_ATTRIBUTE, *self.attributes)
        ):
            raise ConfigurationError(
                f"TTL attribute must be a name other than {KEY_ATTRIBUTE!r} and the attributes "
                f"the load writes ({', '.join(self.attributes)}), got {self.ttl_attribute!r}"
            )
        if self.ttl_seconds is not None and self.ttl_seconds < 0:
            raise ConfigurationError(f"TTL seconds must be >= 0, got {self.ttl_seconds}")


def _value(rng: random.Random, attribute: str) -> Any:
    if attribute == "first_name":
        return rng.choice(_FIRST_NAMES)
    if attribute == "last_name":
        return rng.choice(_LAST_NAMES)
    if attribute == "phone":
        return rng.randrange(2_000_000_000, 10_000_000_000)  # ten digits
    return rng.choice(_CITIES)  # the new attribute


def _customer(rng: random.Random, key: int, attributes: tuple[str, ...]) -> Item:
    item: Item = {KEY_ATTRIBUTE: key}
    for attribute in attributes:
        item[attribute] = _value(rng, attribute)
    return item


def _modified(
    rng: random.Random, item: Mapping[str, Any], attributes: tuple[str, ...]
) -> tuple[Item, tuple[str, ...]]:
    changed = sorted(rng.sample(attributes, rng.randint(1, len(MUTABLE_ATTRIBUTES))))
    new = dict(item)
    for attribute in changed:
        value = _value(rng, attribute)
        while value == item.get(attribute):
            value = _value(rng, attribute)
        new[attribute] = value
    return new, tuple(changed)


def plan_operations(
    options: LoadOptions, *, existing: Mapping[int, Mapping[str, Any]] | None = None
) -> Iterator[Operation]:
    """The operations of a load run, lazily; pure and reproducible from ``options.seed``.

    Args:
        options: count, key space, mix and seed.
        existing: items already in the table by key (from a scan), else an empty table.

    Yields:
        ``options.count`` operations, each valid for the table state its predecessors leave.
    """
    if options.model == "single-table":
        yield from plan_shop(
            count=options.count,
            keys=options.keys,
            mix=options.mix,
            seed=options.seed,
            existing=existing,
        )
        return
    rng = random.Random(options.seed)
    items: dict[int, Mapping[str, Any]] = dict(existing or {})
    space = KeySpace(options.keys, sorted(items))
    kinds = [op for op in OPS if options.mix.get(op, 0) > 0]
    weights = [options.mix[op] for op in kinds]
    for index in range(options.count):
        kind = choose_kind(rng, space, kinds, weights)
        if kind == "insert":
            key = space.pick_absent(rng)
            item = _customer(rng, key, options.attributes)
            space.inserted(key)
            items[key] = item
            yield Operation(index, "insert", key, item)
        elif kind == "modify":
            key = space.pick_present(rng)
            item, changed = _modified(rng, items[key], options.attributes)
            items[key] = item
            yield Operation(index, "modify", key, item, changed)
        else:
            key = space.pick_present(rng)
            space.removed(key)
            del items[key]
            yield Operation(index, "remove", key, None)


def expected_state(
    operations: Iterable[Operation], *, initial: Mapping[int, Mapping[str, Any]] | None = None
) -> dict[int, Item]:
    """The table (key -> item) that ``operations`` leave when applied to ``initial``."""
    state: dict[int, Item] = {key: dict(item) for key, item in (initial or {}).items()}
    for op in operations:
        if op.item is None:
            state.pop(op.key, None)
        else:
            state[op.key] = dict(op.item)
    return state
