"""Shard failures: why a shard's batch could not be applied, and since when.

- New: ``ddbcdc_shard_failures``, per (application, shard): the reason the last attempt at a
  batch failed (``statement_timeout``, ``lock_timeout``, ``database``, ``unexpected``), the
  error (no values), the batch's last sequence number, the attempts and since when. A shard
  processor writes it in a transaction of its own after a failed attempt; ``ddbcdc status``
  shows it while it is newer than the shard's progress row.

Revision ID: 0009_shard_failures
Revises: 0008_removal_cause
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_shard_failures"
down_revision: str | None = "0008_removal_cause"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _now(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


def upgrade() -> None:
    op.create_table(
        "ddbcdc_shard_failures",
        sa.Column("application", sa.Text, primary_key=True),
        sa.Column("shard_id", sa.Text, primary_key=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("sequence_number", sa.Text),
        sa.Column("attempts", sa.BigInteger, nullable=False),
        _now("since"),
        _now("failed_at"),
    )


def downgrade() -> None:
    op.drop_table("ddbcdc_shard_failures")
