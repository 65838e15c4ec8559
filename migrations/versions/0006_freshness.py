"""Freshness per table, shards that have not started, and a stream time that never goes back.

- ``ddbcdc_shard_progress.sequence_number`` may be NULL: a shard the worker has listed (an
  open shard of the stream, or a lease of the KCL) but whose processor has applied nothing yet
  has a row without a position ("not started"), and so does a shard whose processor is
  caught up and idle before its first record.
- New: ``ddbcdc_table_progress``, per (application, shard, target table), the newest change
  time committed and when it was committed (what ``ddbcdc status`` shows as a table's
  freshness).
- New: ``ddbcdc_stream_time``, per application, the stream time as far as it has been
  established (it never moves back) and when the worker last listed the stream's shards.

Revision ID: 0006_freshness
Revises: 0005
Create Date: 2026-12-10
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_freshness"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _now(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


def upgrade() -> None:
    op.alter_column("ddbcdc_shard_progress", "sequence_number", nullable=True)
    op.create_table(
        "ddbcdc_table_progress",
        sa.Column("application", sa.Text, primary_key=True),
        sa.Column("shard_id", sa.Text, primary_key=True),
        sa.Column("target_table", sa.Text, primary_key=True),
        sa.Column("newest_change_us", sa.BigInteger, nullable=False),
        _now("committed_at"),
    )
    op.create_table(
        "ddbcdc_stream_time",
        sa.Column("application", sa.Text, primary_key=True),
        sa.Column("stream_time_us", sa.BigInteger),
        sa.Column("listed_at", sa.DateTime(timezone=True)),
        _now("updated_at"),
    )


def downgrade() -> None:
    op.drop_table("ddbcdc_stream_time")
    op.drop_table("ddbcdc_table_progress")
    op.execute(
        "DELETE FROM ddbcdc_shard_progress WHERE sequence_number IS NULL"
    )  # rows of shards that never applied a record
    op.alter_column("ddbcdc_shard_progress", "sequence_number", nullable=False)
