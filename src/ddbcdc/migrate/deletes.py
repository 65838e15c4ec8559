"""The steps of a change of a mapping's delete modes (:mod:`ddbcdc.schema.deletes`).

The live table must end as if the new modes had applied all along. Rows of items that are
gone stay in it in two ways: **marked** (``_ddbcdc_deleted_at`` set: a REMOVE whose mode was
``soft``) and **kept** (unmarked, its key without a live versions row: a TTL expiry whose
mode was ``keep``). The mapping the table was migrated to says which causes made them; the
new mapping says what those causes do now:

- ``hard``: the rows are deleted (``delete rows``: destructive when there are any);
- ``soft``: marked rows stay; kept rows would need the time of their expiry, which a pruned
  tombstone no longer has: refused while there are any;
- ``keep``: marked rows lose their mark (``unmark rows``: destructive, the times are lost).

A mark does not say whether a user or the TTL removed the row: when the old modes marked
both and the new ones treat them differently, the change is refused while marked rows exist.
``_ddbcdc_deleted_at`` is added when the new modes mark (no row is marked yet: nothing gone
comes back) and dropped, after the rows are dealt with, when they no longer do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from ddbcdc.errors import ConfigurationError
from ddbcdc.migrate.steps import Step, render
from ddbcdc.migrate.versions import recorded
from ddbcdc.schema.deletes import Cause, DeleteMode, DeletePolicy
from ddbcdc.schema.tables import DELETED_AT, MappedTables

__all__ = ["plan_deletes"]

_DIALECT = pg.dialect()  # type: ignore[no-untyped-call]
_CAUSES: tuple[Cause, ...] = ("user", "ttl", "unknown")


def _sql(statement: sa.Delete | sa.Update) -> str:
    compiled = statement.compile(dialect=_DIALECT, compile_kwargs={"literal_binds": True})
    return " ".join(str(compiled).split())  # on one line: it holds no text value


class _Rows:
    """The marked and kept rows of one live table, as statements."""

    def __init__(self, tables: MappedTables, has_mark: bool) -> None:
        key = list(tables.mapping.key)
        self.table = tables.mapping.target_table
        marked: list[sa.ColumnClause[Any]] = [sa.column(DELETED_AT)] if has_mark else []
        self.live = sa.table(self.table, *[sa.column(k) for k in key], *marked)
        columns: list[sa.ColumnClause[Any]] = [sa.column(k) for k in key]
        ver = sa.table(tables.mapping.versions_table, *columns, sa.column("_ddbcdc_deleted"))
        current = sa.exists().where(
            *[ver.c[k] == self.live.c[k] for k in key], sa.not_(ver.c._ddbcdc_deleted)
        )
        self.is_marked = self.live.c[DELETED_AT].is_not(None) if has_mark else sa.false()
        self.is_kept = sa.and_(~current, ~self.is_marked) if has_mark else ~current

    def count(self, conn: sa.Connection, where: sa.ColumnElement[bool]) -> int:
        query = sa.select(sa.func.count()).select_from(self.live).where(where)
        return int(conn.execute(query).scalar() or 0)


def _new_mode(
    old: DeletePolicy, new: DeletePolicy, mode: DeleteMode, what: str, count: int, table: str
) -> DeleteMode | None:
    """What the rows the old ``mode`` left become under ``new`` (None: nothing left)."""
    causes = [c for c in _CAUSES if old.mode(c) == mode]
    now = {c: new.mode(c) for c in causes}
    if len(set(now.values())) <= 1:
        return next(iter(now.values()), None)
    if count == 0:
        return None
    said = ", ".join(f"{c}: {m}" for c, m in now.items())
    raise ConfigurationError(
        f"table {table!r}: {count} {what} rows do not record whether a user or DynamoDB's TTL "
        f"removed them, and the new delete modes treat those apart ({said}); settle those "
        "rows first, or choose modes that treat them alike"
    )


def plan_deletes(conn: sa.Connection, tables: MappedTables, has_mark: bool) -> list[Step]:
    """The steps that take the live table from the delete modes it was migrated to (none
    recorded: hard) to its mapping's; ``has_mark``: it has ``_ddbcdc_deleted_at``."""
    mapping = tables.mapping
    found = recorded(conn, mapping.target_table)
    old = DeletePolicy.from_document(found.mapping) if found is not None else DeletePolicy()
    new = mapping.policy
    rows, table = _Rows(tables, has_mark), mapping.target_table
    steps: list[Step] = []
    if new.marks and not has_mark:
        added = sa.Column(DELETED_AT, sa.DateTime(timezone=True))
        sql = render(lambda op: op.add_column(table, added))
        steps.append(Step("add column", table, f"{DELETED_AT} TIMESTAMPTZ (soft deletes)", sql))
    if has_mark:
        marked = rows.count(conn, rows.is_marked)
        steps += _settle(rows, _new_mode(old, new, "soft", "marked", marked, table), marked, True)
    if old.keeps:
        kept = rows.count(conn, rows.is_kept)
        steps += _settle(rows, _new_mode(old, new, "keep", "kept", kept, table), kept, False)
    if has_mark and not new.marks:
        sql = render(lambda op: op.drop_column(table, DELETED_AT))
        steps.append(Step("drop column", table, f"{DELETED_AT} (no soft deletes)", sql))
    return steps


def _settle(rows: _Rows, mode: DeleteMode | None, count: int, marked: bool) -> Sequence[Step]:
    """What becomes of the marked (or kept) rows now that their mode is ``mode``."""
    what = "marked deleted" if marked else "kept after a TTL expiry"
    where = rows.is_marked if marked else rows.is_kept
    detail = f"{count} row{'' if count == 1 else 's'} {what}"
    if mode == "hard":
        sql = _sql(sa.delete(rows.live).where(where))
        return [Step("delete rows", rows.table, detail, (sql,), count > 0)]
    if mode == "keep" and marked:
        sql = _sql(sa.update(rows.live).where(where).values({DELETED_AT: None}))
        return [Step("unmark rows", rows.table, detail, (sql,), count > 0)]
    if mode == "soft" and not marked and count:
        raise ConfigurationError(
            f"table {rows.table!r}: {detail} have no deletion time to mark them with; keep "
            "ttl_deletes keep, or delete them (ttl_deletes delete with deletes hard) first"
        )
    return []
