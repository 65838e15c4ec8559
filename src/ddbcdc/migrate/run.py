"""Bring PostgreSQL to the schema this version and these mappings need.

In one transaction:

0. the migration lock (:func:`ddbcdc.migrate.versions.one_migration_at_a_time`: two
   migrations run one after the other), then the write lock of every table whose mapping
   changes, taken exclusively (:func:`ddbcdc.migrate.versions.fence_writers`): batches in
   flight commit first, later ones wait and then find the new version and stop, so no
   writer with the old mapping writes the table after it;
1. the Alembic revisions under ``migrations/`` (bookkeeping tables and the shipped
   ``customers`` mapping; installed with the package, :func:`ddbcdc.resources.migrations_dir`),
   run programmatically: no ``alembic.ini`` is needed;
2. every mapping is compared with its tables (:mod:`ddbcdc.migrate.plan`): missing tables
   are created from the same Core metadata (a new mapping file needs no Python code and no
   revision), new columns added, and destructive changes (a column dropped or retyped, the
   change log dropped) refused unless allowed;
3. the mapping each table is now at is recorded (:mod:`ddbcdc.migrate.versions`; a routed
   mapping's under its name, for all its routes).

Then, in transactions of their own, columns added to a table with kept attributes are filled
from them (:mod:`ddbcdc.migrate.jobs`; an interrupted backfill resumes on the next
run), new routes take their items from the catch-all (:mod:`ddbcdc.migrate.moves`), and a
required new column gets its NOT NULL.

A dry run does all of the transaction and rolls it back, so the plan it returns is exact
even with revisions pending (it takes their locks for that long). Upgrading to a revision
other than head runs step 1 only; downgrading runs the revisions down and leaves tables
created in step 2 alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError

from ddbcdc.db import describe, run_transaction
from ddbcdc.errors import ConfigurationError, DatabaseUnavailableError
from ddbcdc.migrate.fill import BackfillReport
from ddbcdc.migrate.jobs import run_backfill, schedule_backfill
from ddbcdc.migrate.moves import run_route_fill
from ddbcdc.migrate.plan import MigrationPlan, Step, plan_tables
from ddbcdc.migrate.versions import (
    check_known,
    fence_writers,
    one_migration_at_a_time,
    record_mapping_version,
    recorded,
)
from ddbcdc.resources import migrations_dir
from ddbcdc.schema.mapping import TableMapping

__all__ = [
    "MigrationResult",
    "alembic_config",
    "downgrade",
    "format_plan",
    "migrate",
    "upgrade",
]


@dataclass
class MigrationResult:
    """What a migration did (or, for a dry run, would do).

    Attributes:
        revision_before: the Alembic revision PostgreSQL was at (None: empty database).
        revision_after: the revision it is at now.
        plans: per mapping, the steps (DDL) and the backfill.
        versions: mapping version recorded per target table.
        versions_before: the version each table was at (None: none recorded).
        backfills: what each backfill did in this run.
        problems: what could not be finished (a NOT NULL refused by rows without a value).
        dry_run: nothing was changed.
    """

    revision_before: str | None = None
    revision_after: str | None = None
    plans: list[MigrationPlan] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=dict)
    versions_before: dict[str, int | None] = field(default_factory=dict)
    backfills: list[BackfillReport] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    dry_run: bool = False

    @property
    def created(self) -> list[str]:
        """The tables created."""
        return [s.table for p in self.plans for s in p.steps if s.action == "create table"]


def alembic_config(connection: sa.Connection) -> Config:
    """An Alembic config that runs ``migrations/`` on ``connection``."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["connection"] = connection
    return config


class _DryRunError(Exception):
    """Rolls a dry run's transaction back, carrying what it found."""

    def __init__(self, result: MigrationResult) -> None:
        super().__init__("dry run")
        self.result = result


def _refusal(plans: Sequence[MigrationPlan]) -> ConfigurationError:
    lines = []
    for plan in plans:
        for step in plan.destructive:
            lines.append(f"  {step.action} {step.table} {step.detail}:")
            lines += [f"    {sql};" for sql in step.sql]
    return ConfigurationError(
        "refusing destructive changes (they lose data; run again with --allow-destructive "
        "to apply them):\n" + "\n".join(lines)
    )


def _apply(conn: sa.Connection, plan: MigrationPlan, result: MigrationResult) -> None:
    for step in plan.immediate:
        for sql in step.sql:
            try:
                conn.exec_driver_sql(sql)
            except sa.exc.DBAPIError as exc:
                if isinstance(exc, sa.exc.OperationalError):
                    raise
                raise ConfigurationError(
                    f"{step.action} {step.table} {step.detail} failed ({describe(exc)}): "
                    "nothing was changed"
                ) from exc
    if plan.backfill and plan.source is not None:
        schedule_backfill(conn, plan.mapping, plan.backfill, plan.source)
    if plan.fill_routes and plan.fill_from is not None:
        schedule_backfill(conn, plan.mapping, plan.fill_routes, plan.fill_from)
    if not plan.record:
        return
    target = plan.mapping.target_table
    before = recorded(conn, target)
    result.versions_before[target] = before.version if before is not None else None
    result.versions[target] = record_mapping_version(conn, plan.mapping)


@contextlib.contextmanager
def _named_revisions() -> Iterator[None]:
    """Alembic's refusal of a revision it cannot find or reach, as a ConfigurationError."""
    try:
        yield
    except CommandError as exc:
        raise ConfigurationError(f"schema revision: {exc}") from exc


def _check_reached(script: ScriptDirectory, revision: str, current: str | None) -> None:
    """Refuse an upgrade to ``revision`` that left the schema elsewhere: it is older than
    the schema (Alembic upgrades nothing then)."""
    with _named_revisions():
        wanted = script.get_revision(revision)
    if wanted is not None and wanted.revision != current:
        raise ConfigurationError(
            f"schema revision: {wanted.revision!r} is older than PostgreSQL's schema "
            f"({current!r}), so nothing was upgraded: to go back to it, run ddbcdc migrate "
            f"--downgrade {wanted.revision}"
        )


def _schema(
    conn: sa.Connection,
    mappings: Sequence[TableMapping],
    revision: str,
    allow_destructive: bool,
    result: MigrationResult,
) -> None:
    one_migration_at_a_time(conn)
    fence_writers(conn, mappings)
    config = alembic_config(conn)
    result.revision_before = MigrationContext.configure(conn).get_current_revision()
    script = ScriptDirectory.from_config(config)
    check_known(script, result.revision_before)
    with _named_revisions():
        command.upgrade(config, revision)
    result.revision_after = MigrationContext.configure(conn).get_current_revision()
    if revision != "head":
        _check_reached(script, revision, result.revision_after)
        return
    result.plans = plan_tables(conn, mappings)
    if not allow_destructive and any(p.destructive for p in result.plans):
        raise _refusal(result.plans)
    for plan in result.plans:
        _apply(conn, plan, result)


def _finish(engine: sa.Engine, step: Step) -> str | None:
    """Run a step that may fail on the data (a NOT NULL): None, or why it could not."""
    try:
        with engine.begin() as conn:
            for sql in step.sql:
                conn.exec_driver_sql(sql)
    except sa.exc.DBAPIError as exc:
        if not isinstance(exc, sa.exc.IntegrityError):
            raise DatabaseUnavailableError(
                f"{step.action} {step.table} {step.detail} failed: {describe(exc)}"
            ) from exc
        return (
            f"{step.table}.{step.detail} stays nullable: some rows have no value (see "
            "ddbcdc dlq list --summary); settle them or give the column a default, then run "
            "ddbcdc migrate again"
        )
    return None


def migrate(
    engine: sa.Engine,
    mappings: Sequence[TableMapping],
    *,
    revision: str = "head",
    allow_destructive: bool = False,
    dry_run: bool = False,
    batch_size: int = 1000,
    on_batch: Callable[[BackfillReport], None] | None = None,
) -> MigrationResult:
    """Migrate (see the module doc).

    Raises:
        ConfigurationError: a destructive change not allowed (with the exact DDL), or a
            difference no migration can make; nothing is changed then.
        DatabaseUnavailableError: PostgreSQL cannot be reached, or failed otherwise (a
            backfill stopped this way resumes at the next run).
    """

    def work(conn: sa.Connection) -> MigrationResult:
        result = MigrationResult(dry_run=dry_run)  # afresh when a collision runs it again
        _schema(conn, mappings, revision, allow_destructive, result)
        if dry_run:
            raise _DryRunError(result)
        return result

    try:
        result = run_transaction(engine, work)
    except _DryRunError as dry:
        return dry.result
    if revision != "head":
        return result
    routed = {r.target_table: m for m in mappings for r in m.routes}  # a route's mapping
    for plan in result.plans:
        if plan.mapping.routes:
            report = run_route_fill(engine, plan.mapping, batch_size=batch_size, on_batch=on_batch)
        else:
            report = run_backfill(
                engine,
                plan.mapping,
                batch_size=batch_size,
                on_batch=on_batch,
                routed=routed.get(plan.mapping.target_table),
            )
        if report is not None:
            result.backfills.append(report)
        if report is None or report.finished:
            result.problems += [p for s in plan.after_backfill if (p := _finish(engine, s))]
    return result


def upgrade(
    engine: sa.Engine, mappings: Sequence[TableMapping], *, revision: str = "head"
) -> list[str]:
    """:func:`migrate` without destructive changes; returns the tables created."""
    return migrate(engine, mappings, revision=revision).created


def downgrade(engine: sa.Engine, *, revision: str = "base") -> None:
    """Run the revisions down to ``revision``."""

    def work(conn: sa.Connection) -> None:
        one_migration_at_a_time(conn)
        command.downgrade(alembic_config(conn), revision)

    with _named_revisions():
        run_transaction(engine, work)


def _version(before: int | None, after: int | None) -> str:
    if after is None:
        return ""
    if before == after:
        return f"mapping version {after} (unchanged)"
    return f"mapping version {before if before is not None else 'none'} -> {after}"


def _plan_lines(plan: MigrationPlan, result: MigrationResult) -> list[str]:
    target = plan.mapping.target_table
    where = plan.mapping.path or plan.mapping.name
    versions = _version(result.versions_before.get(target), result.versions.get(target))
    lines = [f"{target} ({where}): {versions or 'a route'}"]
    for step in plan.steps:
        mark = "  [destructive]" if step.destructive else ""
        later = "  (after the backfill)" if step.action == "set not null" else ""
        lines.append(f"  {step.action} {step.table} {step.detail}{mark}{later}".rstrip())
        lines += [f"    {sql};" for sql in step.sql]
    if plan.backfill:
        source = plan.source or "nothing kept (rows keep NULL until they change)"
        lines.append(f"  backfill {', '.join(plan.backfill)} from {source}")
    if plan.fill_routes:
        lines.append(f"  fill route(s) {', '.join(plan.fill_routes)} from {plan.fill_from}")
    if len(lines) == 1:
        lines.append("  matches its tables")
    return lines


def format_plan(result: MigrationResult) -> str:
    """The plan of a (dry) run, every statement included."""
    before, after = result.revision_before or "empty", result.revision_after
    lines = [f"revisions: {before} -> {after}" if before != after else f"revision: {after}"]
    for plan in result.plans:
        lines += _plan_lines(plan, result)
    return "\n".join(lines)
