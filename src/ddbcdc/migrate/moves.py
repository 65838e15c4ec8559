"""New routes filled from the catch-all's kept items, in batches, resumably.

When ``ddbcdc migrate`` adds routes to a routed mapping (:mod:`ddbcdc.migrate.routes`), the
items they take may already be in the catch-all table, whole. A fill job
(``ddbcdc_backfills``, under the mapping's name: the routes, the catch-all's item column, the
last key done) walks the catch-all in key order, in batches of one transaction each, its
progress committed with them. Per batch, the keys' versions rows are locked first (in key
order, as a batch of changes locks them, so the two never deadlock), then only the rows the
versions rows still place in the catch-all are read: each item goes through the mapping's
routing and its route's cleansing exactly as a change would. An item a new route takes is
inserted into that route's table with its version, deleted from the catch-all, and its
versions row names the route, all in the batch's transaction. One that does not fit its
route's columns is a dead letter (stage ``backfill``, naming the route and column) and stays
in the catch-all; ``ddbcdc dlq replay`` moves it once it fits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from ddbcdc.cleanse.routes import RoutedCleanser
from ddbcdc.decode.attributes import marshal, unmarshal
from ddbcdc.decode.itemjson import decode_attributes, encode_attributes
from ddbcdc.decode.record import ChangeRecord
from ddbcdc.errors import CleanseError
from ddbcdc.materialize.deadletters import DeadLetter, write_dead_letters
from ddbcdc.migrate.fill import BackfillReport
from ddbcdc.migrate.jobs import advance_job, job_row, run_batch
from ddbcdc.schema.mapping import TableMapping
from ddbcdc.schema.tables import VERSION_COLUMNS, MappedTables, mapped_tables

__all__ = ["RouteMover", "run_route_fill"]

Key = tuple[Any, ...]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class RouteMover:
    """Moves items of a routed mapping's catch-all into new routes.

    Args:
        mapping: the routed mapping (with a catch-all).
        routes: the route tables items may move into.
    """

    def __init__(self, mapping: TableMapping, routes: Sequence[str]) -> None:
        catch_all = mapping.catch_all
        assert catch_all is not None and catch_all.mapping.item_column is not None
        self.mapping = mapping
        self.tables = mapped_tables([mapping])[mapping.name]
        by_target = {t.mapping.target_table: t for t in self.tables.routes}
        self.catch_all: MappedTables = by_target[catch_all.target_table]
        self.item = catch_all.mapping.item_column
        self.routes = {t: by_target[t] for t in routes if t in by_target}
        self.cleanser = RoutedCleanser(mapping)
        self.key = list(mapping.key)
        self.sources = [c.source for c in mapping.key_columns]
        self._inserts = {t: _insert(tables) for t, tables in self.routes.items()}

    def next_keys(self, conn: sa.Connection, after: Key | None, limit: int) -> list[Key]:
        """The catch-all's next keys in key order (not locked)."""
        live = self.catch_all.live
        columns = [live.c[k] for k in self.key]
        query = sa.select(*columns).order_by(*columns).limit(limit)
        if after is not None:
            bound = [sa.literal(v, c.type) for v, c in zip(after, columns, strict=True)]
            query = query.where(sa.tuple_(*columns) > sa.tuple_(*bound))
        return [tuple(r) for r in conn.execute(query)]

    def move(self, conn: sa.Connection, keys: Sequence[Key]) -> BackfillReport:
        """Move the items of ``keys`` that a new route takes (see the module doc)."""
        report = BackfillReport(self.mapping.target_table, list(self.routes))
        if not keys:
            return report
        ver, live = self.tables.versions, self.catch_all.live
        vkey = [ver.c[k] for k in self.key]
        locked = conn.execute(
            sa.select(*vkey)
            .where(sa.tuple_(*vkey).in_(keys), ver.c._ddbcdc_route == live.name)
            .order_by(*vkey)
            .with_for_update()
        ).all()
        if not locked:
            return report
        lkey = [live.c[k] for k in self.key]
        rows = conn.execute(
            sa.select(
                *lkey, sa.cast(live.c[self.item], sa.Text), *[live.c[v] for v in VERSION_COLUMNS]
            )
            .where(sa.tuple_(*lkey).in_([tuple(r) for r in locked]))
            .with_for_update()
        ).all()
        moved: dict[str, list[Key]] = {}
        values: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            report.rows += 1
            key, text, version = tuple(row[: len(lkey)]), row[len(lkey)], row[len(lkey) + 1 :]
            target, row_values = self._route(key, text, version, report)
            if target is not None:
                moved.setdefault(target, []).append(key)
                values.setdefault(target, []).append(row_values)
        for target in sorted(moved):
            self._apply(conn, target, moved[target], values[target])
            report.filled += len(moved[target])
        return report

    def _route(
        self, key: Key, text: str | None, version: Sequence[Any], report: BackfillReport
    ) -> tuple[str | None, dict[str, Any]]:
        """(the new route that takes the item, its row there), or (None, {})."""
        if text is None:
            return None, {}
        item = decode_attributes(text)
        keys = dict(zip(self.sources, key, strict=True))
        us = int(version[0])
        record = ChangeRecord.model_construct(
            event_id=str(version[2]), event_name="INSERT", table_name=self.mapping.source_table,
            aws_region=None, keys=unmarshal(marshal(keys)), new_image=item, old_image=None,
            approximate_creation=_EPOCH + timedelta(microseconds=us),
            approximate_creation_us=us, size_bytes=None, is_ttl_delete=False,
        )  # fmt: skip
        try:
            change = self.cleanser.cleanse(record)
        except CleanseError as exc:
            report.letters.append(self._letter(key, exc))
            report.dead_lettered += 1
            return None, {}
        if change.route not in self.routes or change.row is None:
            return None, {}
        row = dict(change.row)
        row.update(zip(VERSION_COLUMNS, version, strict=True))
        return change.route, row

    def _apply(
        self, conn: sa.Connection, target: str, keys: list[Key], rows: list[dict[str, Any]]
    ) -> None:
        ver, live = self.tables.versions, self.catch_all.live
        conn.execute(self._inserts[target], rows)
        conn.execute(sa.delete(live).where(sa.tuple_(*[live.c[k] for k in self.key]).in_(keys)))
        vkey = sa.tuple_(*[ver.c[k] for k in self.key])
        conn.execute(
            sa.update(ver)
            .where(vkey.in_(keys))
            .values(_ddbcdc_route=target, _ddbcdc_prev_route=live.name)
        )

    def _letter(self, key: Key, exc: CleanseError) -> DeadLetter:
        keys = dict(zip(self.sources, key, strict=True))
        route = exc.table or self.mapping.target_table
        payload = {"backfill": self.mapping.target_table, "route": route, "key": marshal(keys)}
        return DeadLetter(
            stage="backfill",
            error=exc.message,
            error_path=f"{self.item}.{(exc.path or '').rsplit('.', 1)[-1]}",
            payload=orjson.dumps(payload),
            source_table=self.mapping.source_table,
            target_table=route,
            error_column=exc.column,
            error_reason=exc.reason,
        )

    def encode_key(self, key: Key) -> str:
        """``key`` as kept-attributes JSON (the job row's ``after_key``)."""
        return encode_attributes(dict(zip(self.key, key, strict=True)))

    def decode_key(self, text: str) -> Key:
        """The inverse of :meth:`encode_key`."""
        values = decode_attributes(text)
        return tuple(values[k] for k in self.key)

    def letter_key(self, payload: bytes) -> Key:
        """The key a move's dead letter names."""
        values = unmarshal(orjson.loads(payload)["key"])
        return tuple(values[s] for s in self.sources)


def _insert(tables: MappedTables) -> sa.Insert:
    """An INSERT of a route's rows, jsonb columns given as their JSON text."""
    live = tables.live
    names = [*tables.mapping.stored_columns, *VERSION_COLUMNS]
    values: dict[str, Any] = {}
    for name in names:
        column = live.c[name]
        if isinstance(column.type, pg.JSONB):
            values[name] = sa.cast(sa.bindparam(name, type_=sa.Text()), pg.JSONB())
        else:
            values[name] = sa.bindparam(name, type_=column.type)
    return sa.insert(live).values(values)


def _batch(engine: sa.Engine, mover: RouteMover, batch_size: int) -> tuple[BackfillReport, bool]:
    """One batch in one transaction, the job row moved on in it: (report, more to do); run
    again while it conflicts with other transactions (a lock timeout, a deadlock)."""
    target = mover.mapping.target_table
    return run_batch(engine, target, lambda conn: _batch_in(conn, mover, batch_size))


def _batch_in(
    conn: sa.Connection, mover: RouteMover, batch_size: int
) -> tuple[BackfillReport, bool]:
    """:func:`_batch`'s transaction."""
    target = mover.mapping.target_table
    job = job_row(conn, target)
    assert job is not None
    after = mover.decode_key(job.after_key) if job.after_key is not None else None
    keys = mover.next_keys(conn, after, batch_size)
    report = mover.move(conn, keys)
    write_dead_letters(conn, report.letters)
    after_key = mover.encode_key(keys[-1]) if keys else None
    advance_job(conn, target, rows=len(keys), dead_lettered=report.dead_lettered, after=after_key)
    return report, bool(keys)


def run_route_fill(
    engine: sa.Engine,
    mapping: TableMapping,
    *,
    batch_size: int = 1000,
    on_batch: Callable[[BackfillReport], None] | None = None,
) -> BackfillReport | None:
    """Run a routed mapping's pending fill of new routes to its end.

    Returns:
        What this run did, None when no fill was pending.

    Raises:
        DatabaseUnavailableError: PostgreSQL unreachable or refusing, or conflicts that
            persist; the batches before are committed, the next run resumes after them.
    """
    target = mapping.target_table
    job = run_batch(engine, target, lambda conn: job_row(conn, target))
    if job is None or job.finished_at is not None or mapping.catch_all is None:
        return None
    mover = RouteMover(mapping, job.columns)
    total = BackfillReport(mapping.target_table, list(mover.routes))
    while True:
        report, more = _batch(engine, mover, batch_size)
        total.add(report)
        if on_batch is not None:
            on_batch(report)
        if not more:
            total.finished = True
            return total
