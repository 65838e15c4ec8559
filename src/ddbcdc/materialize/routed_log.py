"""The change logs of a routed mapping's routes (step 3 of :mod:`ddbcdc.materialize.routed`)."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from ddbcdc.cleanse import CleanChange
from ddbcdc.materialize.changelog import ChangeLog, LogRow
from ddbcdc.schema.tables import MappedTables

__all__ = ["RoutedLog"]


class RoutedLog:
    """The change logs of a routed mapping's routes (step 3 of the module doc)."""

    def __init__(self, tables: MappedTables) -> None:
        self._logs = {
            r.mapping.target_table: ChangeLog(r) for r in tables.routes if r.changes is not None
        }
        self._index = {r.mapping.target_table: i for i, r in enumerate(tables.routes)}
        self._versions = tables.versions
        self._key = list(tables.mapping.key)

    def rows(self, changes: Sequence[CleanChange]) -> list[LogRow]:
        """Per change: (its route's table, its log row), (None, the change) when PostgreSQL
        must tell its route, (the table, None) when that route keeps no log."""
        out: list[LogRow] = []
        for change in changes:
            target = change.route
            if target is None:
                out.append((None, change))
                continue
            log = self._logs.get(target)
            if log is None:
                out.append((target, None))
                continue
            key = change.route_keys[self._index[target]]
            assert key is not None
            out.append((target, log.keyed_rows([(change, key)])[0]))
        return out

    def _logged(self, conn: sa.Connection, ids: list[str]) -> set[str]:
        """Those of ``ids`` some route's log holds already (a REMOVE another writer logged
        by another route: this transaction holds its key's versions row, so no writer is
        logging it meanwhile)."""
        found = [
            sa.select(log.table.c._ddbcdc_event_id).where(log.table.c._ddbcdc_event_id.in_(ids))
            for log in self._logs.values()
        ]
        return set(conn.execute(sa.union_all(*found)).scalars()) if found else set()

    def _decide(self, conn: sa.Connection, changes: list[CleanChange]) -> list[tuple[str, LogRow]]:
        """The routes of REMOVEs only the versions rows can tell, and their log rows."""
        ver = self._versions
        done = self._logged(conn, [c.event_id for c in changes])
        changes = [c for c in changes if c.event_id not in done]
        if not changes:
            return []
        keys = list({c.key for c in changes})
        columns = [ver.c[k] for k in self._key]
        query = sa.select(
            *columns, ver.c._ddbcdc_event_id, ver.c._ddbcdc_route, ver.c._ddbcdc_prev_route
        ).where(sa.tuple_(*columns).in_(keys))
        found = {tuple(r[: len(columns)]): r[len(columns) :] for r in conn.execute(query)}
        out = []
        for change in changes:
            target = None
            row = found.get(change.key)
            if row is not None:
                event_id, route, prev = row
                target = prev if event_id == change.event_id else route or prev
            if target is None or change.route_keys[self._index[target]] is None:
                firsts = [t for t, i in self._index.items() if change.route_keys[i] is not None]
                target = firsts[0] if firsts else None
            log = self._logs.get(target) if target is not None else None
            if log is not None and target is not None:
                key = change.route_keys[self._index[target]]
                assert key is not None
                out.append((target, log.keyed_rows([(change, key)])[0]))
        return out

    def write(self, conn: sa.Connection, rows: Sequence[LogRow]) -> None:
        """Append ``rows`` (from :meth:`rows`) to their routes' logs."""
        by_target: dict[str, list[LogRow]] = {}
        undecided = [item for target, item in rows if target is None]
        decided = [(t, item) for t, item in rows if t is not None and item is not None]
        if undecided:
            decided += self._decide(conn, undecided)
        for target, row in decided:
            by_target.setdefault(target, []).append(row)
        for target in sorted(by_target):
            self._logs[target].write(conn, by_target[target])
