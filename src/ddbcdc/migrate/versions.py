"""Which mapping each table was migrated to, and the fence that keeps every writer to it.

``ddbcdc migrate`` records, per target table, the normalized mapping it brought the table to
(:func:`ddbcdc.schema.mapping.mapping_document`), its SHA-256 digest and a counter that goes up with
each different mapping. Two hosts with different mappings never write one table:

- a writer (``ddbcdc worker``, its shard processors, ``ddbcdc apply``, ``ddbcdc dlq
  replay``) whose mapping has another digest refuses to start and says what differs
  (:func:`check_engine`), as it does when PostgreSQL's schema is not at the revision this
  ddbcdc needs (its newest: an upgraded ddbcdc before ``ddbcdc migrate``, or a schema taken
  down with ``--downgrade``), instead of failing every batch on a missing column or function;
- every batch, in its own transaction, commits only if each of its mappings is still the
  one recorded for its table (:class:`Fence`); else nothing of it is written and
  :class:`~ddbcdc.errors.MappingChangedError` names the difference;
- what makes that check exact is the tables' write lock (the advisory lock of
  :mod:`ddbcdc.materialize.prune`): a batch's first statement takes it shared and then
  reads the versions with a fresh snapshot (the ``ddbcdc_fence`` function of revision
  ``0007``: one round trip); ``migrate`` takes it exclusively, at the start of its
  transaction, for every table whose mapping it changes (:func:`fence_writers`). So a
  batch in flight commits before the new version does, and a batch that starts later waits
  for the migration to commit, then finds the new version and stops.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from ddbcdc.db import describe
from ddbcdc.errors import ConfigurationError, DatabaseUnavailableError, MappingChangedError
from ddbcdc.materialize.prune import lock_key
from ddbcdc.resources import migrations_dir
from ddbcdc.schema.bookkeeping import mapping_versions
from ddbcdc.schema.mapping import (
    TableMapping,
    mapping_differences,
    mapping_digest,
    mapping_document,
)

if TYPE_CHECKING:
    from alembic.script import ScriptDirectory

__all__ = [
    "HEAD_REVISION",
    "Fence",
    "MappingVersion",
    "check_engine",
    "check_known",
    "check_mapping_versions",
    "check_revision",
    "fence_writers",
    "one_migration_at_a_time",
    "record_mapping_version",
    "recorded",
]


@dataclass(frozen=True, slots=True)
class MappingVersion:
    """The mapping a table was migrated to."""

    target_table: str
    version: int
    digest: str
    mapping: dict[str, Any]
    migrated_at: datetime


def recorded(conn: sa.Connection, target_table: str) -> MappingVersion | None:
    """The recorded mapping version of a table, None when it has none."""
    row = conn.execute(
        sa.select(mapping_versions).where(mapping_versions.c.target_table == target_table)
    ).first()
    return MappingVersion(**row._asdict()) if row is not None else None


def record_mapping_version(conn: sa.Connection, mapping: TableMapping) -> int:
    """Record ``mapping`` as what its table is migrated to; returns its version number (the
    same when the mapping is unchanged, one more when it differs)."""
    digest = mapping_digest(mapping)
    stmt = pg.insert(mapping_versions).values(
        target_table=mapping.target_table,
        version=1,
        digest=digest,
        mapping=mapping_document(mapping),
    )
    table = mapping_versions.c
    upsert = stmt.on_conflict_do_update(
        index_elements=[table.target_table],
        set_={
            "version": table.version + 1,
            "digest": stmt.excluded.digest,
            "mapping": stmt.excluded.mapping,
            "migrated_at": sa.func.now(),
        },
        where=table.digest != stmt.excluded.digest,
    ).returning(table.version)
    version = conn.execute(upsert).scalar()
    if version is None:  # unchanged: the conflict updated nothing
        found = recorded(conn, mapping.target_table)
        assert found is not None
        return found.version
    return int(version)


def mismatch(found: MappingVersion | None, mapping: TableMapping) -> str | None:
    """Why ``mapping`` may not write its table (None when it may)."""
    where = mapping.path or mapping.name
    if found is None:
        return (
            f"table {mapping.target_table!r} has no recorded mapping version: run "
            f"ddbcdc migrate with mapping {where} first"
        )
    if found.digest == mapping_digest(mapping):
        return None
    changes = mapping_differences(found.mapping, mapping_document(mapping))
    return (
        f"mapping {where} differs from the one table {mapping.target_table!r} was migrated to "
        f"(version {found.version}, {found.migrated_at:%Y-%m-%d %H:%M:%S %Z}, digest "
        f"{found.digest[:12]}); from that mapping to this one: "
        f"{'; '.join(changes) or 'digest differs'}. Run ddbcdc migrate with this mapping, or "
        "use the mapping of that version"
    )


def check_mapping_versions(conn: sa.Connection, mappings: Sequence[TableMapping]) -> None:
    """Refuse mappings that are not what their tables were migrated to.

    Raises:
        ConfigurationError: naming each mapping that differs, and how.
    """
    if not sa.inspect(conn).has_table(mapping_versions.name):
        raise ConfigurationError(
            f"PostgreSQL has no {mapping_versions.name} table: run ddbcdc migrate first"
        )
    check_revision(conn)
    problems = [mismatch(recorded(conn, m.target_table), m) for m in mappings]
    found = [p for p in problems if p is not None]
    if found:
        raise ConfigurationError(" | ".join(found))


#: The newest revision of ``migrations/`` (a test holds it to Alembic's head).
HEAD_REVISION = "0010_dead_letter_position"


def check_known(script: ScriptDirectory, current: str | None) -> None:
    """Refuse a schema at a revision ``script`` does not have: a newer ddbcdc migrated it."""
    if current is None or current in {r.revision for r in script.walk_revisions()}:
        return
    raise ConfigurationError(
        f"PostgreSQL's schema is at revision {current!r}, which this ddbcdc does not know "
        f"(its newest is {script.get_current_head()!r}): a newer ddbcdc migrated it; run "
        "that version"
    )


def check_revision(conn: sa.Connection) -> None:
    """Refuse a schema that is not at the newest revision of this ddbcdc's ``migrations/``.

    Raises:
        ConfigurationError: naming the revision found and the one needed.
    """
    version = sa.table("alembic_version", sa.column("version_num", sa.Text))
    found = conn.execute(sa.select(version.c.version_num)).scalars().all()
    if found == [HEAD_REVISION]:  # the common case, without loading Alembic (~0.1 s)
        return
    # Imported here: only a writer whose schema is elsewhere needs Alembic to say where.
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    current = MigrationContext.configure(conn).get_current_revision()
    script = ScriptDirectory(str(migrations_dir()))
    check_known(script, current)
    head = script.get_current_head()
    if current != head:
        raise ConfigurationError(
            f"PostgreSQL's schema is at revision {current!r}, this ddbcdc needs {head!r}: "
            "run ddbcdc migrate first"
        )


def check_engine(engine: sa.Engine, mappings: Sequence[TableMapping]) -> None:
    """:func:`check_mapping_versions` on a connection of ``engine``.

    Raises:
        ConfigurationError: a mapping differs from what its table was migrated to.
        DatabaseUnavailableError: PostgreSQL cannot be asked.
    """
    try:
        with engine.connect() as conn:
            check_mapping_versions(conn, mappings)
    except sa.exc.DBAPIError as exc:
        raise DatabaseUnavailableError(
            f"cannot read the mapping versions from PostgreSQL: {describe(exc)}"
        ) from exc


class Fence:
    """What each batch passes first in its transaction: its tables' write locks, taken
    shared, then the check that its mappings are still the ones their tables were migrated
    to (see the module doc for why it is exact).

    Args:
        mappings: the writer's mappings, as their files say (a pipeline that leaves the
            change log out still names the mapping it was started with).
    """

    def __init__(self, mappings: Sequence[TableMapping]) -> None:
        self.mappings = tuple(mappings)
        self.digests = {m.target_table: mapping_digest(m) for m in self.mappings}
        keys = sa.bindparam("keys", type_=pg.ARRAY(sa.BigInteger))
        targets = sa.literal(sorted(self.digests), pg.ARRAY(sa.Text))
        fenced = sa.func.ddbcdc_fence(keys, targets).table_valued(
            sa.column("target_table", sa.Text), sa.column("digest", sa.Text)
        )
        self._query = sa.select(fenced.c.target_table, fenced.c.digest)

    def enter(self, conn: sa.Connection, written: Iterable[str]) -> None:
        """Take the write locks of the tables ``written`` shared, then check every mapping
        against what its table was migrated to, now: one statement, first in the batch's
        transaction (the locks are held until it ends).

        Raises:
            MappingChangedError: what changed, per table; the caller's transaction must not
                commit.
        """
        keys = sorted({lock_key(t) for t in written})
        found = {target: digest for target, digest in conn.execute(self._query, {"keys": keys})}
        if found != self.digests:
            raise MappingChangedError(" | ".join(self._changes(conn)))

    def _changes(self, conn: sa.Connection) -> list[str]:
        changes = []
        for mapping in self.mappings:
            found = recorded(conn, mapping.target_table)
            if found is not None and found.digest == self.digests[mapping.target_table]:
                continue
            where = mapping.path or mapping.name
            if found is None:
                changes.append(
                    f"table {mapping.target_table!r} has no recorded mapping version any more "
                    f"(this writer runs mapping {where}): nothing of the batch was written"
                )
                continue
            differences = mapping_differences(mapping_document(mapping), found.mapping)
            changes.append(
                f"table {mapping.target_table!r} was migrated to mapping version "
                f"{found.version} ({found.migrated_at:%Y-%m-%d %H:%M:%S %Z}) while this writer "
                f"ran mapping {where}; from that mapping to the table's: "
                f"{'; '.join(differences) or 'digest differs'}. Nothing of the batch was "
                "written: restart the writer with the mapping the table has now"
            )
        return changes


#: The lock every migration takes first (its name is no table's: see :func:`lock_key`).
_MIGRATION_KEY = "ddbcdc.migrate"


def one_migration_at_a_time(conn: sa.Connection) -> None:
    """Wait for any other migration to end, and keep others waiting until ``conn``'s
    transaction ends (call it first in a migration's transaction). Two ``ddbcdc migrate``
    at once (two hosts deploying a release) then run one after the other, the second
    planning against what the first committed, instead of both running the same DDL and
    the second failing on it, or recording its mapping over the other's columns."""
    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(lock_key(_MIGRATION_KEY))))


def fence_writers(conn: sa.Connection, mappings: Sequence[TableMapping]) -> list[str]:
    """Take the write lock of every table whose mapping ``migrate`` is about to change,
    exclusively, until ``conn``'s transaction ends (call it first in the migration's
    transaction, before any DDL: writers take that lock before they touch anything).

    Returns:
        The tables locked (a mapping with no recorded version, or another digest).
    """
    known: dict[str, str] = {}
    if sa.inspect(conn).has_table(mapping_versions.name):
        table = mapping_versions.c
        rows = conn.execute(sa.select(table.target_table, table.digest))
        known = {target: digest for target, digest in rows}
    targets = sorted(
        m.target_table for m in mappings if known.get(m.target_table) != mapping_digest(m)
    )
    for key in sorted(lock_key(t) for t in targets):
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))
    return targets
