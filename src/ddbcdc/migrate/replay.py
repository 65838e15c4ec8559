"""Replay of backfill dead letters: each fills its column for its key again (a route's: moves
its item from the catch-all into the route, :mod:`ddbcdc.migrate.moves`).

A value that did not fit its new column kept its attribute among the kept ones; after a fix
(the item changed, so a writer set the column; or a mapping fixed and migrated) ``ddbcdc dlq
replay`` fills the column of that key again with today's mapping. What fits now, or has
nothing left to do, is marked replayed; what still fails keeps its row with the new error.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
import sqlalchemy as sa

from ddbcdc.materialize.deadletters import (
    DeadLetter,
    StoredDeadLetter,
    mark_replayed,
    record_failures,
)
from ddbcdc.migrate.fill import Filler
from ddbcdc.migrate.moves import RouteMover
from ddbcdc.migrate.versions import Fence
from ddbcdc.schema.mapping import TableMapping

__all__ = ["replay_backfill"]


def _replay_one(
    conn: sa.Connection, mapping: TableMapping, letter: StoredDeadLetter
) -> DeadLetter | None:
    """Fill the columns a backfill dead letter names, for its key, with today's mapping:
    None when done (or nothing is left to do), else the new failure."""
    doc = orjson.loads(letter.payload)
    named = doc.get("columns") or [doc.get("column")]
    source = mapping.item_column or mapping.extra_column
    columns = [c.name for c in mapping.columns if c.name in named]
    if source is None or not columns:
        return None
    filler = Filler(mapping, columns, source)
    key = filler.letter_key(letter.payload)
    match = [c == sa.literal(v, c.type) for c, v in zip(filler.key, key, strict=True)]
    rows = conn.execute(filler.select().where(*match).with_for_update()).all()
    report = filler.fill(conn, rows, write_letters=False)
    return report.letters[0] if report.letters else None


def _replay_move(
    conn: sa.Connection, mapping: TableMapping, letter: StoredDeadLetter
) -> DeadLetter | None:
    """Move the item a route's dead letter names from the catch-all, with today's mapping."""
    route = orjson.loads(letter.payload)["route"]
    if mapping.catch_all is None or route not in mapping.targets:
        return None
    mover = RouteMover(mapping, [route])
    report = mover.move(conn, [mover.letter_key(letter.payload)])
    return report.letters[0] if report.letters else None


def replay_backfill(
    engine: sa.Engine, mappings: Sequence[TableMapping], letters: Sequence[StoredDeadLetter]
) -> int:
    """Replay backfill dead letters in one transaction: each fills its column for its key
    again; those that now fit are marked replayed, the others keep their row with the new
    error. Returns how many still fail.

    Raises:
        MappingChangedError: a table was migrated to another mapping (nothing replayed).
    """
    by_target = {m.target_table: m for m in mappings}
    # A column added to a route's table is filled, and its letters named, by the route.
    tables = by_target | {r.target_table: r.mapping for m in mappings for r in m.routes}
    failing: list[tuple[int, DeadLetter]] = []
    done: list[int] = []
    with engine.begin() as conn:
        Fence(mappings).enter(conn, by_target)
        for letter in letters:
            routed = orjson.loads(letter.payload).get("route") is not None
            owner = orjson.loads(letter.payload).get("backfill") if routed else None
            mapping = (by_target if routed else tables).get(owner or letter.target_table or "")
            if mapping is None:
                again: DeadLetter | None = DeadLetter(
                    stage="backfill",
                    error=f"no table mapping for target table {letter.target_table!r}",
                    payload=letter.payload,
                    source_table=letter.source_table,
                    target_table=letter.target_table,
                    error_column=letter.error_column,
                    error_reason="no table mapping",
                )
            elif routed:
                again = _replay_move(conn, mapping, letter)
            else:
                again = _replay_one(conn, mapping, letter)
            if again is None:
                done.append(letter.id)
            else:
                failing.append((letter.id, again))
        record_failures(conn, failing)
        mark_replayed(conn, done)
    return len(failing)
