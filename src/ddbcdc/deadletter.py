"""Dead letters: poison records kept with everything needed to replay them.

A record that fails decode, cleanse or (rarely) apply is written to ``ddbcdc_dead_letters``
with its exact raw bytes and source position, in the same transaction as the rest of its
batch. :func:`list_dead_letters` reads them; replay goes through
:meth:`ddbcdc.pipeline.Pipeline.replay`, which marks ``replayed_at`` on success and records
the new error on failure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import sqlalchemy as sa

from ddbcdc.errors import PoisonRecordError
from ddbcdc.tables import dead_letters

__all__ = [
    "DeadLetter",
    "StoredDeadLetter",
    "list_dead_letters",
    "mark_replayed",
    "record_failures",
    "write_dead_letters",
]

Stage = Literal["decode", "cleanse", "apply"]


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

    @classmethod
    def from_error(
        cls,
        stage: Stage,
        exc: Exception,
        *,
        payload: bytes,
        source_table: str | None = None,
        target_table: str | None = None,
        shard_id: str | None = None,
        sequence_number: str | None = None,
        partition_key: str | None = None,
    ) -> DeadLetter:
        """Build a dead letter from the error that made the record poison."""
        poison = exc if isinstance(exc, PoisonRecordError) else None
        return cls(
            stage=stage,
            error=poison.message if poison else f"{type(exc).__name__}: {exc}",
            error_path=poison.path if poison else None,
            payload=payload,
            source_table=source_table,
            target_table=target_table,
            shard_id=shard_id,
            sequence_number=sequence_number,
            partition_key=partition_key,
        )

    def values(self) -> dict[str, object]:
        """Column values for ``ddbcdc_dead_letters``."""
        return {name: getattr(self, name) for name in self.__slots__}


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
                error=letter.error,
                error_path=letter.error_path,
                source_table=letter.source_table,
                target_table=letter.target_table,
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
        include_replayed: also return those already replayed.
        stage: only this stage ('decode', 'cleanse', 'apply').
        source_table: only records of this DynamoDB table.
        shard_id: only records from this shard.
        after_id: only ids greater than this (for paging).
        limit: at most this many (None: all).
    """
    query = sa.select(dead_letters).where(dead_letters.c.id > after_id)
    if not include_replayed:
        query = query.where(dead_letters.c.replayed_at.is_(None))
    if stage is not None:
        query = query.where(dead_letters.c.stage == stage)
    if source_table is not None:
        query = query.where(dead_letters.c.source_table == source_table)
    if shard_id is not None:
        query = query.where(dead_letters.c.shard_id == shard_id)
    query = query.order_by(dead_letters.c.id).limit(limit)
    return [StoredDeadLetter(**row._asdict()) for row in conn.execute(query)]
