"""Bookkeeping tables: dead letters and shard progress.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ddbcdc_dead_letters",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
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
        sa.CheckConstraint(
            "stage IN ('decode', 'cleanse', 'apply')", name="ddbcdc_dead_letters_stage_check"
        ),
    )
    op.create_index(
        "ddbcdc_dead_letters_pending_idx",
        "ddbcdc_dead_letters",
        ["id"],
        postgresql_where=sa.text("replayed_at IS NULL"),
    )
    op.create_table(
        "ddbcdc_shard_progress",
        sa.Column("application", sa.Text, primary_key=True),
        sa.Column("shard_id", sa.Text, primary_key=True),
        sa.Column("sequence_number", sa.Text, nullable=False),
        sa.Column("records_total", sa.BigInteger, nullable=False),
        sa.Column("batches_total", sa.BigInteger, nullable=False),
        sa.Column("millis_behind_latest", sa.BigInteger),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
    )


def downgrade() -> None:
    op.drop_table("ddbcdc_shard_progress")
    op.drop_index("ddbcdc_dead_letters_pending_idx", table_name="ddbcdc_dead_letters")
    op.drop_table("ddbcdc_dead_letters")
