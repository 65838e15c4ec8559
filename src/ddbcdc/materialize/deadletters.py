"""Dead letters: poison records kept with everything needed to replay them.

A record that fails decode, cleanse or (rarely) apply is written to ``ddbcdc_dead_letters``
with its exact raw bytes, source position and (when it decoded) its version, in the same
transaction as the rest of its batch. :func:`list_dead_letters` reads them; replay goes
through :meth:`ddbcdc.pipeline.Pipeline.replay`, which marks ``replayed_at`` on success and
records the new error on failure; :func:`discard_dead_letters` gives up on some. A pending
dead letter (neither replayed nor discarded) keeps the tombstones its replay may need.

Each dead letter says, apart from its full error text, which column refused a value (when
one did) and why in words that name types, never values (``error_column``, ``error_reason``:
``phone``, ``S where numeric expected``): :func:`summarize_dead_letters` counts them per
table, column and reason, which is how type drift in a source table shows.

The text columns are written with anything PostgreSQL text cannot hold escaped (U+0000, lone
surrogates, as ``\x00``, ``\ud800``), so writing a dead letter never fails on its content.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa

from ddbcdc.errors import CleanseError, PoisonRecordError
from ddbcdc.schema.bookkeeping import dead_letters

log = logging.getLogger(__name__)

_TEXT_FIELDS = frozenset(
    {
        "error",
        "error_path",
        "source_table",
        "target_table",
        "shard_id",
        "sequence_number",
        "partition_key",
        "error_column",
        "error_reason",
        "source_position",
    }
)


def poison_reason(exc: BaseException) -> str | None:
    """The reason of a poison record's error (it names no value): a cleanse error's reason,
    else its message."""
    if isinstance(exc, CleanseError) and exc.reason:
        return exc.reason
    return exc.message if isinstance(exc, PoisonRecordError) else None


def storable(text: str | None) -> str | None:
    """``text`` with what PostgreSQL text cannot hold (U+0000, lone surrogates) escaped."""
    if text is None or (text.isascii() and "\x00" not in text):
        return text
    escaped = text.replace("\x00", "\\x00")
    return escaped.encode("utf-8", "backslashreplace").decode("utf-8")


__all__ = [
    "DeadLetter",
    "DeadLetterCount",
    "ReasonKey",
    "StoredDeadLetter",
    "dead_letter",
    "discard_dead_letters",
    "list_dead_letters",
    "mark_replayed",
    "poison_reason",
    "reason_counts",
    "record_failures",
    "summarize_dead_letters",
    "write_dead_letters",
]

Stage = Literal["decode", "cleanse", "apply", "backfill"]
#: (table, column, reason) of a dead letter: what type drift is counted by.
ReasonKey = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A poison record about to be stored."""

    stage: Stage
    error: str
    payload: bytes
    error_path: str | None = None
    source_table: str | None = None
    target_table: str | None = None
    shard_id: str | None = None
    sequence_number: str | None = None
    partition_key: str | None = None
    version_us: int | None = None
    error_column: str | None = None
    error_reason: str | None = None
    source_position: str | None = None  # a file's record: the file and where in it

    @property
    def reason(self) -> str:
        """What the dead letter is counted under: the reason, else the error."""
        return self.error_reason or self.error

    def values(self) -> dict[str, object]:
        """Column values for ``ddbcdc_dead_letters``, text made storable."""
        return {
            name: storable(getattr(self, name)) if name in _TEXT_FIELDS else getattr(self, name)
            for name in self.__slots__
        }


@dataclass(frozen=True, slots=True)
class StoredDeadLetter:
    """A dead letter as stored (one row of ``ddbcdc_dead_letters``)."""

    id: int
    received_at: datetime
    stage: str
    error: str
    error_path: str | None
    source_table: str | None
    target_table: str | None
    shard_id: str | None
    sequence_number: str | None
    partition_key: str | None
    payload: bytes
    replayed_at: datetime | None
    version_us: int | None = None
    discarded_at: datetime | None = None
    error_column: str | None = None
    error_reason: str | None = None
    source_position: str | None = None


@dataclass(frozen=True, slots=True)
class DeadLetterCount:
    """Pending dead letters of one table, column and reason (:func:`summarize_dead_letters`)."""

    table: str | None
    column: str | None
    reason: str
    stage: str
    count: int


def reason_counts(letters: Sequence[DeadLetter]) -> dict[ReasonKey, int]:
    """How many of ``letters`` per (table, column, reason); ``"-"`` for none."""
    counts: dict[ReasonKey, int] = {}
    for x in letters:
        key = (x.target_table or x.source_table or "-", x.error_column or "-", x.reason)
        counts[key] = counts.get(key, 0) + 1
    return counts


def write_dead_letters(conn: sa.Connection, letters: Sequence[DeadLetter]) -> int:
    """Insert dead letters in the caller's transaction; returns how many."""
    if letters:
        conn.execute(sa.insert(dead_letters), [letter.values() for letter in letters])
    return len(letters)


def record_failures(conn: sa.Connection, failures: Sequence[tuple[int, DeadLetter]]) -> None:
    """Replace the error of dead letters that failed again (``(id, new letter)`` pairs)."""
    for letter_id, letter in failures:
        conn.execute(
            sa.update(dead_letters)
            .where(dead_letters.c.id == letter_id)
            .values(
                stage=letter.stage,
                error=storable(letter.error),
                error_path=storable(letter.error_path),
                source_table=storable(letter.source_table),
                target_table=storable(letter.target_table),
                version_us=letter.version_us,
                error_column=storable(letter.error_column),
                error_reason=storable(letter.error_reason),
            )
        )


def mark_replayed(conn: sa.Connection, ids: Sequence[int]) -> int:
    """Set ``replayed_at = now()`` on dead letters that applied; returns how many."""
    if not ids:
        return 0
    stmt = (
        sa.update(dead_letters)
        .where(dead_letters.c.id.in_(ids), dead_letters.c.replayed_at.is_(None))
        .values(replayed_at=sa.func.now())
    )
    return conn.execute(stmt).rowcount


def list_dead_letters(
    conn: sa.Connection,
    *,
    include_replayed: bool = False,
    stage: str | None = None,
    source_table: str | None = None,
    shard_id: str | None = None,
    after_id: int = 0,
    limit: int | None = 100,
) -> list[StoredDeadLetter]:
    """Dead letters in id order, optionally filtered.

    Args:
        conn: a connection.
        include_replayed: also return those already replayed or discarded.
        stage: only this stage ('decode', 'cleanse', 'apply').
        source_table: only records of this DynamoDB table.
        shard_id: only records from this shard.
        after_id: only ids greater than this (for paging).
        limit: at most this many (None: all).
    """
    query = sa.select(dead_letters).where(dead_letters.c.id > after_id)
    if not include_replayed:
        query = query.where(
            dead_letters.c.replayed_at.is_(None), dead_letters.c.discarded_at.is_(None)
        )
    if stage is not None:
        query = query.where(dead_letters.c.stage == stage)
    if source_table is not None:
        query = query.where(dead_letters.c.source_table == source_table)
    if shard_id is not None:
        query = query.where(dead_letters.c.shard_id == shard_id)
    query = query.order_by(dead_letters.c.id).limit(limit)
    return [StoredDeadLetter(**row._asdict()) for row in conn.execute(query)]


def discard_dead_letters(conn: sa.Connection, ids: Sequence[int]) -> int:
    """Set ``discarded_at = now()`` on pending dead letters: given up on, they no longer
    hold tombstone pruning back. Returns how many."""
    if not ids:
        return 0
    stmt = (
        sa.update(dead_letters)
        .where(
            dead_letters.c.id.in_(ids),
            dead_letters.c.replayed_at.is_(None),
            dead_letters.c.discarded_at.is_(None),
        )
        .values(discarded_at=sa.func.now())
    )
    return conn.execute(stmt).rowcount


def summarize_dead_letters(
    conn: sa.Connection, *, include_replayed: bool = False, source_table: str | None = None
) -> list[DeadLetterCount]:
    """Pending dead letters counted per target table, column, reason and stage, most first.

    Args:
        conn: a connection.
        include_replayed: count those replayed or discarded too.
        source_table: only records of this DynamoDB table.
    """
    table = sa.func.coalesce(dead_letters.c.target_table, dead_letters.c.source_table)
    reason = sa.func.coalesce(dead_letters.c.error_reason, dead_letters.c.error)
    count = sa.func.count().label("count")
    groups = (table, dead_letters.c.error_column, reason, dead_letters.c.stage)
    query = sa.select(*groups, count).group_by(*groups)
    if not include_replayed:
        query = query.where(
            dead_letters.c.replayed_at.is_(None), dead_letters.c.discarded_at.is_(None)
        )
    if source_table is not None:
        query = query.where(dead_letters.c.source_table == source_table)
    query = query.order_by(count.desc(), *groups)
    return [DeadLetterCount(*row) for row in conn.execute(query)]


def dead_letter(
    stage: Stage,
    text: str,
    poison: PoisonRecordError | None = None,
    **where: Any,
) -> DeadLetter:
    """The dead letter of a record, logged (its position and reason, never its contents).

    Args:
        stage: where the record failed.
        text: the reason, naming no value.
        poison: the error that made it poison, when there is one (its message, path,
            column and reason are kept).
        where: the other :class:`DeadLetter` fields (payload, tables, shard, sequence, ...).
    """
    log.warning(
        "dead-lettering a record at stage %s (shard %s, sequence %s): %s",
        stage,
        where.get("shard_id"),
        where.get("sequence_number"),
        text,
    )
    return DeadLetter(
        stage=stage,
        error=poison.message if poison is not None else text,
        error_path=poison.path if poison is not None else None,
        error_column=poison.column if isinstance(poison, CleanseError) else None,
        error_reason=poison_reason(poison) if poison is not None else None,
        **where,
    )
