"""Backfill bookkeeping: snapshot and export-import runs, and how far each segment got.

- ``ddbcdc_snapshots``: one row per backfill run (a segmented Scan of the live table, or the
  import of a full or incremental export): what it reads, the version its prune hold keeps,
  its status (``running`` until every segment is done; at most one running per target table).
- ``ddbcdc_snapshot_segments``: per scan segment (or export data file) the position to
  continue from (a Scan's LastEvaluatedKey, an export file's line), committed in the
  transaction of the rows it follows, and whether the segment is done.

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _now(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(
        name,
        sa.DateTime(timezone=True),
        nullable=nullable,
        server_default=None if nullable else sa.func.now(),
    )


def upgrade() -> None:
    op.create_table(
        "ddbcdc_snapshots",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("source_table", sa.Text, nullable=False),
        sa.Column("target_table", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("segments", sa.Integer, nullable=False),
        sa.Column("min_version_us", sa.BigInteger, nullable=False),
        sa.Column("expected_items", sa.BigInteger),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("detail", pg.JSONB, nullable=False),
        _now("started_at"),
        _now("updated_at"),
        _now("finished_at", nullable=True),
        sa.CheckConstraint(
            "kind IN ('scan', 'export', 'incremental_export')",
            name="ddbcdc_snapshots_kind_check",
        ),
        sa.CheckConstraint(
            "status IN ('running', 'done', 'abandoned')", name="ddbcdc_snapshots_status_check"
        ),
    )
    op.create_index(
        "ddbcdc_snapshots_running_idx",
        "ddbcdc_snapshots",
        ["target_table"],
        unique=True,
        postgresql_where=sa.text("status = 'running'"),
    )
    op.create_table(
        "ddbcdc_snapshot_segments",
        sa.Column(
            "snapshot_id",
            sa.Text,
            sa.ForeignKey("ddbcdc_snapshots.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("segment", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text),
        sa.Column("position", pg.JSONB),
        sa.Column("done", sa.Boolean, nullable=False),
        sa.Column("items", sa.BigInteger, nullable=False),
        sa.Column("pages", sa.BigInteger, nullable=False),
        _now("updated_at"),
    )


def downgrade() -> None:
    op.drop_table("ddbcdc_snapshot_segments")
    op.drop_index("ddbcdc_snapshots_running_idx", table_name="ddbcdc_snapshots")
    op.drop_table("ddbcdc_snapshots")
