"""Routes that change under a routed mapping: what ``ddbcdc migrate`` may do about them.

The mapping a routed mapping was last migrated to (``ddbcdc_mapping_versions``) is compared
with the one given:

- a **new route** gets its table (:mod:`ddbcdc.migrate.plan`) and then takes, from the
  catch-all's kept items, those the mapping now routes to it (:mod:`ddbcdc.migrate.moves`).
  New routes go after the routes that exist: one before them would take items those hold;
- a **removed route** (the catch-all turned off included) loses its rows: its tables are
  dropped only with ``--allow-destructive`` (its items come back as they change, or with a
  snapshot);
- a route whose **match or key changed**, routes **reordered**, or another DynamoDB key,
  would leave rows in tables that no longer hold them: not a migration (a new route takes
  them instead).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from ddbcdc.cleanse.routes import NO_ROUTE
from ddbcdc.errors import ConfigurationError
from ddbcdc.schema.bookkeeping import dead_letters, mapping_versions
from ddbcdc.schema.mapping import TableMapping, mapping_document

__all__ = ["RouteChanges", "route_changes", "unmatched_items"]


@dataclass
class RouteChanges:
    """How a routed mapping's routes changed since its last migration.

    Attributes:
        added: new routes (tables), to be filled from the catch-all.
        removed: routes (tables) no longer in the mapping, the old catch-all included.
        fill_from: the catch-all table the new routes are filled from (None: there was
            none, or it changed: nothing to fill from).
    """

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    fill_from: str | None = None


def _refuse(mapping: TableMapping, problem: str) -> ConfigurationError:
    where = mapping.path or mapping.name
    return ConfigurationError(
        f"mapping {where}: {problem}; that is not a migration ddbcdc can run (add a new "
        "route, after the existing ones, instead)"
    )


def _catch_all(document: Mapping[str, Any]) -> str | None:
    unmatched = document.get("unmatched")
    return unmatched["target_table"] if unmatched else None


def _kept_routes(
    mapping: TableMapping, old: list[dict[str, Any]], new: list[dict[str, Any]]
) -> None:
    """Refuse reordered routes, routes added before existing ones, changed matches."""
    before = {r["target_table"]: r for r in old}
    after = [r["target_table"] for r in new]
    kept_old = [t for t in before if t in after]
    kept_new = [t for t in after if t in before]
    if kept_old != kept_new:
        raise _refuse(mapping, f"routes reordered ({kept_old} -> {kept_new})")
    for index, target in enumerate(after):
        later = [t for t in after[index + 1 :] if t in before]
        if target not in before and later:
            raise _refuse(
                mapping,
                f"route {target!r} added before route(s) {later}: it would take items they hold",
            )
    for route in new:
        found = before.get(route["target_table"])
        if found is None:
            continue
        for part in ("match", "key"):
            if found[part] != route[part]:
                raise _refuse(
                    mapping,
                    f"route {route['target_table']!r}: {part} {found[part]!r} -> "
                    f"{route[part]!r} (its rows were chosen by the old one)",
                )


def route_changes(old: Mapping[str, Any] | None, mapping: TableMapping) -> RouteChanges:
    """What changed between the document a routed mapping was migrated to (``old``; None:
    never migrated) and ``mapping``.

    Raises:
        ConfigurationError: a change that is not a migration (see the module doc).
    """
    if old is None:
        return RouteChanges()
    if "routes" not in old:
        raise _refuse(mapping, f"table {mapping.target_table!r} was migrated as a plain mapping")
    new = mapping_document(mapping)
    if old["key"] != new["key"]:
        raise _refuse(mapping, f"DynamoDB key {old['key']!r} -> {new['key']!r}")
    _kept_routes(mapping, old["routes"], new["routes"])
    before = [r["target_table"] for r in old["routes"]]
    after = [r["target_table"] for r in new["routes"]]
    changes = RouteChanges(
        added=[t for t in after if t not in before],
        removed=[t for t in before if t not in after],
    )
    old_catch_all, catch_all = _catch_all(old), _catch_all(new)
    if old_catch_all is not None and old_catch_all != catch_all:
        changes.removed.append(old_catch_all)
    if catch_all is not None and catch_all == old_catch_all:
        changes.fill_from = catch_all
    return changes


def unmatched_items(conn: sa.Connection) -> list[dict[str, Any]]:
    """Per routed mapping PostgreSQL was migrated to: how many items no route takes, kept in
    its catch-all table, or (without one) pending as dead letters."""
    out = []
    query = sa.select(mapping_versions.c.target_table, mapping_versions.c.mapping)
    for name, document in conn.execute(query.order_by(mapping_versions.c.target_table)):
        if "routes" not in document:
            continue
        table = _catch_all(document)
        if table is not None:
            if not sa.inspect(conn).has_table(table):
                continue
            count = sa.select(sa.func.count()).select_from(sa.table(table))
        else:
            d = dead_letters.c
            count = sa.select(sa.func.count()).where(
                d.target_table == name,
                d.error_reason == NO_ROUTE,
                d.replayed_at.is_(None),
                d.discarded_at.is_(None),
            )
        found = int(conn.execute(count).scalar() or 0)
        out.append({"mapping": name, "catch_all": table, "unmatched": found})
    return out
