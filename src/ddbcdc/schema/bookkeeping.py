"""The bookkeeping tables as SQLAlchemy Core tables: the single source of truth of their schema.

Always present, created by migrations ``0001`` and ``0003`` unless named otherwise (the tables
of each mapping: :mod:`ddbcdc.schema.tables`):

- ``ddbcdc_dead_letters``: poison records with their exact raw bytes, source position (a
  stream's shard and sequence number, or since ``0010`` a file's name and where in it) and,
  when the record decoded, its version (a pending dead letter holds tombstone pruning there).
- ``ddbcdc_shard_progress``: per (application, shard) progress, written with each batch: the
  furthest sequence number applied (never moves back) and the newest change time applied
  (the shard's position in stream time, which bounds tombstone pruning). A shard the worker
  listed whose processor has applied nothing yet has a row without either ("not started").
- ``ddbcdc_table_progress`` (``0006``): per (application, shard, target table), the newest
  change time committed and when (a table's freshness).
- ``ddbcdc_stream_time`` (``0006``): per application, the stream time established so far
  (it never moves back) and when the worker last listed the stream's shards.
- ``ddbcdc_shard_failures`` (``0009``): per (application, shard), the last time a batch of
  the shard could not be applied (why: ``statement_timeout``, ``lock_timeout``, ``database``,
  ``unexpected``), since when it has been failing and how often, written in a transaction of
  its own; current while newer than the shard's progress row.
- ``ddbcdc_prune_state``: per target table, the floor below which tombstones may be gone.
- ``ddbcdc_prune_holds``: sources that may still bring old changes (snapshots, imports):
  tombstones at or above a hold's version are kept.
- ``ddbcdc_mapping_versions`` (``0004``): per target table, the mapping it was migrated to
  (normalized document, digest, a counter); writers with another mapping refuse to start.
- ``ddbcdc_backfills`` (``0004``): per target table, the columns ``ddbcdc migrate`` is
  filling from the kept attributes, and how far it got (resumable).
- ``ddbcdc_snapshots`` and ``ddbcdc_snapshot_segments`` (migration ``0005``): backfill runs
  (a scan of the live table or the import of an export) and, per scan segment or export data
  file, how far it got, committed with the rows it follows (:mod:`ddbcdc.backfill.state`).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

__all__ = [
    "backfills",
    "bookkeeping_metadata",
    "dead_letters",
    "mapping_versions",
    "now_column",
    "prune_holds",
    "prune_state",
    "shard_failures",
    "shard_progress",
    "snapshot_segments",
    "snapshots",
    "stream_time",
    "table_progress",
]


bookkeeping_metadata = sa.MetaData()


def now_column(name: str) -> sa.Column[Any]:
    """A timestamptz column set to the time of the insert (``now()``) by PostgreSQL."""
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


dead_letters = sa.Table(
    "ddbcdc_dead_letters",
    bookkeeping_metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
    now_column("received_at"),
    sa.Column("stage", sa.Text, nullable=False),
    sa.Column("error", sa.Text, nullable=False),
    sa.Column("error_path", sa.Text),
    sa.Column("source_table", sa.Text),
    sa.Column("target_table", sa.Text),
    sa.Column("shard_id", sa.Text),
    sa.Column("sequence_number", sa.Text),
    sa.Column("partition_key", sa.Text),
    sa.Column("payload", pg.BYTEA, nullable=False),
    sa.Column("replayed_at", sa.DateTime(timezone=True)),
    sa.Column("version_us", sa.BigInteger),
    sa.Column("discarded_at", sa.DateTime(timezone=True)),
    sa.Column("error_column", sa.Text),
    sa.Column("error_reason", sa.Text),
    sa.Column("source_position", sa.Text),  # 0010: a file's record: the file and where in it
    sa.CheckConstraint(
        "stage IN ('decode', 'cleanse', 'apply', 'backfill')",
        name="ddbcdc_dead_letters_stage_check",
    ),
)
sa.Index(
    "ddbcdc_dead_letters_pending_idx",
    dead_letters.c.id,
    postgresql_where=dead_letters.c.replayed_at.is_(None),
)

shard_progress = sa.Table(
    "ddbcdc_shard_progress",
    bookkeeping_metadata,
    sa.Column("application", sa.Text, primary_key=True),
    sa.Column("shard_id", sa.Text, primary_key=True),
    sa.Column("sequence_number", sa.Text),  # NULL: nothing applied yet
    sa.Column("records_total", sa.BigInteger, nullable=False),
    sa.Column("batches_total", sa.BigInteger, nullable=False),
    sa.Column("millis_behind_latest", sa.BigInteger),
    now_column("updated_at"),
    sa.Column("max_version_us", sa.BigInteger),
    sa.Column("ended_at", sa.DateTime(timezone=True)),
)

table_progress = sa.Table(
    "ddbcdc_table_progress",
    bookkeeping_metadata,
    sa.Column("application", sa.Text, primary_key=True),
    sa.Column("shard_id", sa.Text, primary_key=True),
    sa.Column("target_table", sa.Text, primary_key=True),
    sa.Column("newest_change_us", sa.BigInteger, nullable=False),
    now_column("committed_at"),
)

stream_time = sa.Table(
    "ddbcdc_stream_time",
    bookkeeping_metadata,
    sa.Column("application", sa.Text, primary_key=True),
    sa.Column("stream_time_us", sa.BigInteger),
    sa.Column("listed_at", sa.DateTime(timezone=True)),
    now_column("updated_at"),
)

shard_failures = sa.Table(
    "ddbcdc_shard_failures",
    bookkeeping_metadata,
    sa.Column("application", sa.Text, primary_key=True),
    sa.Column("shard_id", sa.Text, primary_key=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("error", sa.Text, nullable=False),
    sa.Column("sequence_number", sa.Text),  # the last record of the batch retried
    sa.Column("attempts", sa.BigInteger, nullable=False),
    now_column("since"),
    now_column("failed_at"),
)

prune_state = sa.Table(
    "ddbcdc_prune_state",
    bookkeeping_metadata,
    sa.Column("target_table", sa.Text, primary_key=True),
    sa.Column("floor_us", sa.BigInteger, nullable=False),
    sa.Column("pruned_total", sa.BigInteger, nullable=False),
    now_column("pruned_at"),
)

prune_holds = sa.Table(
    "ddbcdc_prune_holds",
    bookkeeping_metadata,
    sa.Column("holder", sa.Text, primary_key=True),
    sa.Column("target_table", sa.Text),  # NULL: every table
    sa.Column("min_version_us", sa.BigInteger, nullable=False),
    now_column("created_at"),
)

mapping_versions = sa.Table(
    "ddbcdc_mapping_versions",
    bookkeeping_metadata,
    sa.Column("target_table", sa.Text, primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("digest", sa.Text, nullable=False),
    sa.Column("mapping", pg.JSONB, nullable=False),
    now_column("migrated_at"),
)

backfills = sa.Table(
    "ddbcdc_backfills",
    bookkeeping_metadata,
    sa.Column("target_table", sa.Text, primary_key=True),
    sa.Column("columns", pg.ARRAY(sa.Text), nullable=False),
    sa.Column("source_column", sa.Text, nullable=False),
    sa.Column("after_key", sa.Text),  # the last key done, as kept-attributes JSON
    sa.Column("rows_done", sa.BigInteger, nullable=False),
    sa.Column("dead_lettered", sa.BigInteger, nullable=False),
    now_column("started_at"),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
)

snapshots = sa.Table(
    "ddbcdc_snapshots",
    bookkeeping_metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("source_table", sa.Text, nullable=False),
    sa.Column("target_table", sa.Text, nullable=False),
    sa.Column("source", sa.Text, nullable=False),  # the table scanned, or the export's location
    sa.Column("segments", sa.Integer, nullable=False),
    sa.Column("min_version_us", sa.BigInteger, nullable=False),  # its prune hold
    sa.Column("expected_items", sa.BigInteger),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("detail", pg.JSONB, nullable=False),
    now_column("started_at"),
    now_column("updated_at"),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.CheckConstraint(
        "kind IN ('scan', 'export', 'incremental_export')", name="ddbcdc_snapshots_kind_check"
    ),
    sa.CheckConstraint(
        "status IN ('running', 'done', 'abandoned')", name="ddbcdc_snapshots_status_check"
    ),
)
# At most one unfinished backfill per target table.
sa.Index(
    "ddbcdc_snapshots_running_idx",
    snapshots.c.target_table,
    unique=True,
    postgresql_where=snapshots.c.status == "running",
)

snapshot_segments = sa.Table(
    "ddbcdc_snapshot_segments",
    bookkeeping_metadata,
    sa.Column(
        "snapshot_id",
        sa.Text,
        sa.ForeignKey("ddbcdc_snapshots.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("segment", sa.Integer, primary_key=True),
    sa.Column("name", sa.Text),  # an export's data file
    sa.Column("position", pg.JSONB),  # a scan's LastEvaluatedKey, an export file's line
    sa.Column("done", sa.Boolean, nullable=False),
    sa.Column("items", sa.BigInteger, nullable=False),
    sa.Column("pages", sa.BigInteger, nullable=False),
    now_column("updated_at"),
)
