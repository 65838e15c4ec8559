"""Which mapping each table was migrated to, and the check every writer makes at start.

``ddbcdc migrate`` records, per target table, the normalized mapping it brought the table to
(:func:`ddbcdc.schema.mapping.mapping_document`), its SHA-256 digest and a counter that goes up with
each different mapping. A writer (``ddbcdc worker``, its shard processors, ``ddbcdc apply``,
``ddbcdc dlq replay``) whose mapping has another digest refuses to start and says what
differs: two hosts with different mappings must never write one table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from ddbcdc.db import describe
from ddbcdc.errors import ConfigurationError, DatabaseUnavailableError
from ddbcdc.schema.mapping import (
    TableMapping,
    mapping_differences,
    mapping_digest,
    mapping_document,
)
from ddbcdc.schema.tables import mapping_versions

__all__ = [
    "MappingVersion",
    "check_engine",
    "check_mapping_versions",
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
    problems = [mismatch(recorded(conn, m.target_table), m) for m in mappings]
    found = [p for p in problems if p is not None]
    if found:
        raise ConfigurationError(" | ".join(found))


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
