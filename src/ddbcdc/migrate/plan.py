"""Compare a mapping with its tables in PostgreSQL and plan what ``ddbcdc migrate`` does.

A plan is a list of steps, each with the exact DDL it runs (rendered once by Alembic's
PostgreSQL dialect: what is printed is what is executed):

- **additive**, always run: a missing table is created; a new column is added (nullable at
  first) and, for a mapped column, filled afterwards from the kept attributes (the backfill);
  a column that became optional drops its NOT NULL; a required column gets NOT NULL once its
  backfill is done;
- **destructive**, refused unless allowed: a column dropped (no longer in the mapping), a
  column retyped (``ALTER COLUMN ... TYPE ... USING``), the change log dropped. Dropping a
  column of a table that holds no row, or a change log that holds none, loses nothing and runs;
- a change of the delete modes (:mod:`ddbcdc.migrate.deletes`): ``_ddbcdc_deleted_at`` added
  or dropped, and the rows of deleted items the table keeps deleted or unmarked (destructive
  when there are any).

A change of the key, or of a bookkeeping column, is not a migration: it stops the plan with
what differs (copy the table under a new mapping instead).

A routed mapping gets a plan of its own (its versions table; the tables of removed routes
dropped, destructive unless empty, and the versions rows naming them cleared; the new routes
to fill from the catch-all, :mod:`ddbcdc.migrate.routes`) and one per route, planned as a
plain mapping's table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from ddbcdc.errors import ConfigurationError
from ddbcdc.migrate.deletes import plan_deletes
from ddbcdc.migrate.routes import route_changes
from ddbcdc.migrate.steps import Step, render
from ddbcdc.migrate.versions import recorded
from ddbcdc.schema.mapping import CHANGE_LOG_PREFIX, RESERVED_PREFIX, TableMapping
from ddbcdc.schema.tables import DELETED_AT, MappedTables, mapped_tables

__all__ = ["MigrationPlan", "Step", "plan_tables"]

_DIALECT = pg.dialect()  # type: ignore[no-untyped-call]


@dataclass
class MigrationPlan:
    """What ``ddbcdc migrate`` does for one mapping.

    Attributes:
        mapping: the mapping.
        steps: DDL steps, in order (``set not null`` ones run after the backfill).
        backfill: mapped columns to fill from the kept attributes.
        source: the kept column they are filled from (None: nothing kept to fill from).
        record: the mapping version is recorded for ``mapping`` (not for a route's table:
            its routed mapping's records it).
        fill_routes: of a routed mapping: new routes to fill from the catch-all.
        fill_from: the catch-all table they are filled from.
    """

    mapping: TableMapping
    steps: list[Step] = field(default_factory=list)
    backfill: list[str] = field(default_factory=list)
    source: str | None = None
    record: bool = True
    fill_routes: list[str] = field(default_factory=list)
    fill_from: str | None = None

    @property
    def destructive(self) -> list[Step]:
        """The steps that lose data."""
        return [s for s in self.steps if s.destructive]

    @property
    def immediate(self) -> list[Step]:
        """The steps run in the migration's transaction."""
        return [s for s in self.steps if s.action != "set not null"]

    @property
    def after_backfill(self) -> list[Step]:
        """The steps run once the backfill is done."""
        return [s for s in self.steps if s.action == "set not null"]


def _create(table: sa.Table) -> tuple[str, ...]:
    statements = [str(sa.schema.CreateTable(table).compile(dialect=_DIALECT)).strip()]
    statements += [
        str(sa.schema.CreateIndex(index).compile(dialect=_DIALECT)).strip()
        for index in sorted(table.indexes, key=lambda i: str(i.name))
    ]
    return tuple(statements)


def _type_name(type_: sa.types.TypeEngine[Any]) -> str:
    return type_.compile(dialect=_DIALECT).split(" COLLATE ")[0]


def _not_a_migration(mapping: TableMapping, table: str, problem: str) -> ConfigurationError:
    where = mapping.path or mapping.name
    return ConfigurationError(
        f"table {table!r} does not match mapping {where}: {problem}; that is not a "
        "migration ddbcdc can run (copy the data into a new target table instead)"
    )


class _Planner:
    def __init__(self, conn: sa.Connection, tables: MappedTables) -> None:
        self.conn = conn
        self.inspector = sa.inspect(conn)
        self.tables = tables
        self.mapping = tables.mapping
        self.plan = MigrationPlan(tables.mapping)
        self.existing = set(self.inspector.get_table_names())
        self.added: set[str] = set()
        self.retyped: set[str] = set()

    def run(self) -> MigrationPlan:
        routed = bool(self.tables.routes)
        for table in (self.tables.versions,) if routed else self.tables.all:
            if table.name not in self.existing:
                self.plan.steps.append(Step("create table", table.name, "", _create(table)))
            elif not routed and table is self.tables.live:
                self._live(table)
            else:
                self._bookkeeping(table)
        changes = self.mapping.change_log_table
        if not routed and self.tables.changes is None and changes in self.existing:
            sql = render(lambda op: op.drop_table(changes))
            lost = not self._empty(changes)
            self.plan.steps.append(Step("drop table", changes, "change log off", sql, lost))
        if self.plan.backfill:
            self.plan.source = self._kept_source()
            if self.plan.source != self.mapping.item_column:
                # Unmapped attributes hold no mapped one: a retyped column is cast instead.
                self.plan.backfill = [c for c in self.plan.backfill if c not in self.retyped]
        return self.plan

    def _found(self, table: sa.Table) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {
            c["name"]: dict(c) for c in self.inspector.get_columns(table.name)
        }
        key = list(self.inspector.get_pk_constraint(table.name)["constrained_columns"])
        want = [c.name for c in table.primary_key.columns]
        if key != want:
            raise _not_a_migration(self.mapping, table.name, f"primary key is {key}, not {want}")
        for column in table.primary_key.columns:
            have = _type_name(found[column.name]["type"])
            if have != _type_name(column.type):
                problem = f"key column {column.name!r} is {have}, not {_type_name(column.type)}"
                raise _not_a_migration(self.mapping, table.name, problem)
        return found

    def _bookkeeping(self, table: sa.Table) -> None:
        found = self._found(table)
        missing = [c.name for c in table.columns if c.name not in found]
        extra = [name for name in found if name not in table.columns]
        if missing or extra:
            problem = f"columns missing {missing}, not expected {extra}"
            raise _not_a_migration(self.mapping, table.name, problem)

    def _live(self, table: sa.Table) -> None:
        found = self._found(table)
        has_mark = found.pop(DELETED_AT, None) is not None
        for column in table.columns:
            have = found.pop(column.name, None)
            if column.name == DELETED_AT:
                continue  # the delete modes' steps, below
            if column.name.startswith(RESERVED_PREFIX):
                if have is None:
                    problem = f"bookkeeping column {column.name!r} is missing"
                    raise _not_a_migration(self.mapping, table.name, problem)
            elif have is None:
                self._add(table.name, column)
            else:
                self._compare(table.name, column, have)
        for name in found:
            self._drop(table.name, name)
        self.plan.steps += plan_deletes(self.conn, self.tables, has_mark)

    def _drop(self, table: str, name: str) -> None:
        sql = render(lambda op: op.drop_column(table, name))
        self.plan.steps.append(Step("drop column", table, name, sql, not self._empty(table)))

    def _empty(self, table: str) -> bool:
        """Whether ``table`` holds no row: dropping it, or one of its columns, loses nothing."""
        any_row = sa.exists(sa.select(sa.literal(1)).select_from(sa.table(table)))
        return not self.conn.execute(sa.select(any_row)).scalar()

    def _kept_source(self) -> str | None:
        """The kept column a new column can be filled from: the whole item, else the
        unmapped attributes; only one that exists before this migration."""
        for name in (self.mapping.item_column, self.mapping.extra_column):
            if name is not None and name not in self.added:
                return name
        return None

    def _add(self, table: str, column: sa.Column[Any]) -> None:
        added = sa.Column(column.name, column.type)
        sql = render(lambda op: op.add_column(table, added))
        self.added.add(column.name)
        mapped = {c.name: c for c in self.mapping.columns}.get(column.name)
        detail = f"{column.name} {_type_name(column.type)}"
        if mapped is not None:
            self.plan.backfill.append(column.name)
            detail += f" (attribute {mapped.source!r})"
        self.plan.steps.append(Step("add column", table, detail, sql))
        if not column.nullable:
            self._set_not_null(table, column)

    def _set_not_null(self, table: str, column: sa.Column[Any]) -> None:
        sql = render(
            lambda op: op.alter_column(
                table, column.name, nullable=False, existing_type=column.type
            )
        )
        self.plan.steps.append(Step("set not null", table, column.name, sql))

    def _compare(self, table: str, column: sa.Column[Any], have: dict[str, Any]) -> None:
        want_type, have_type = _type_name(column.type), _type_name(have["type"])
        if want_type != have_type:
            quoted = _DIALECT.identifier_preparer.quote(column.name)
            using = f"{quoted}::{want_type.lower()}"
            sql = render(
                lambda op: op.alter_column(
                    table,
                    column.name,
                    type_=column.type,
                    existing_type=have["type"],
                    postgresql_using=using,
                )
            )
            detail = f"{column.name} {have_type} -> {want_type}"
            self.plan.steps.append(Step("retype column", table, detail, sql, True))
            if column.name in {c.name for c in self.mapping.columns}:
                self.plan.backfill.append(column.name)
                self.retyped.add(column.name)
        if bool(have["nullable"]) and not column.nullable:
            self._set_not_null(table, column)
        elif not have["nullable"] and column.nullable:
            sql = render(
                lambda op: op.alter_column(
                    table, column.name, nullable=True, existing_type=column.type
                )
            )
            self.plan.steps.append(Step("drop not null", table, column.name, sql))

    def remove_route(self, target: str) -> None:
        """Drop a removed route's tables (destructive unless empty); clear the versions rows
        that name it (their items are in no table now)."""
        for table in (target, CHANGE_LOG_PREFIX + target):
            if table in self.existing:
                sql = render(lambda op, t=table: op.drop_table(t))  # type: ignore[misc]
                lost = not self._empty(table)
                self.plan.steps.append(Step("drop table", table, "route removed", sql, lost))
        ver = self.tables.versions
        clear = (
            sa.update(ver)
            .where(ver.c._ddbcdc_route == target)
            .values(_ddbcdc_route=None, _ddbcdc_prev_route=None)
        )
        sql = (str(clear.compile(dialect=_DIALECT, compile_kwargs={"literal_binds": True})),)
        self.plan.steps.append(Step("clear route", ver.name, target, sql))


def _routed(conn: sa.Connection, tables: MappedTables) -> list[MigrationPlan]:
    """A routed mapping's plan, then one per route (see the module doc)."""
    found = recorded(conn, tables.mapping.target_table)
    changes = route_changes(found.mapping if found is not None else None, tables.mapping)
    planner = _Planner(conn, tables)
    plan = planner.run()
    for target in changes.removed:
        planner.remove_route(target)
    if changes.fill_from is not None and changes.added:
        plan.fill_routes, plan.fill_from = changes.added, changes.fill_from
    routes = [_Planner(conn, route).run() for route in tables.routes]
    for route in routes:
        route.record = False
    return [plan, *routes]


def plan_tables(conn: sa.Connection, mappings: Sequence[TableMapping]) -> list[MigrationPlan]:
    """The plan of every mapping against what ``conn`` has now (reads only).

    Raises:
        ConfigurationError: a difference no migration can make (key, bookkeeping columns,
            routes reordered or rematched).
    """
    plans: list[MigrationPlan] = []
    for tables in mapped_tables(mappings, sa.MetaData()).values():
        plans += _routed(conn, tables) if tables.routes else [_Planner(conn, tables).run()]
    return plans
