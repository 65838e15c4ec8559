"""Mappings that evolve: the mapping each table was migrated to, backfills, structured dead
letters.

- New: ``ddbcdc_mapping_versions`` (per target table: the normalized mapping it was migrated
  to, its digest and a counter; a writer with another mapping refuses to start) and
  ``ddbcdc_backfills`` (the columns ``ddbcdc migrate`` fills from the kept attributes, and
  the last key done, so an interrupted backfill resumes).
- ``ddbcdc_dead_letters`` gains ``error_column`` and ``error_reason`` (the column that
  refused a value and why, naming types, never values: what ``ddbcdc dlq list --summary``
  counts) and the stage ``backfill`` (a downgrade turns those into ``cleanse`` ones).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STAGE_CHECK = "ddbcdc_dead_letters_stage_check"


def _now(name: str, *, nullable: bool = False) -> sa.Column[object]:
    default = None if nullable else sa.func.now()
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable, server_default=default)


def upgrade() -> None:
    op.create_table(
        "ddbcdc_mapping_versions",
        sa.Column("target_table", sa.Text, primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("digest", sa.Text, nullable=False),
        sa.Column("mapping", pg.JSONB, nullable=False),
        _now("migrated_at"),
    )
    op.create_table(
        "ddbcdc_backfills",
        sa.Column("target_table", sa.Text, primary_key=True),
        sa.Column("columns", pg.ARRAY(sa.Text), nullable=False),
        sa.Column("source_column", sa.Text, nullable=False),
        sa.Column("after_key", sa.Text),
        sa.Column("rows_done", sa.BigInteger, nullable=False),
        sa.Column("dead_lettered", sa.BigInteger, nullable=False),
        _now("started_at"),
        _now("finished_at", nullable=True),
    )
    op.add_column("ddbcdc_dead_letters", sa.Column("error_column", sa.Text))
    op.add_column("ddbcdc_dead_letters", sa.Column("error_reason", sa.Text))
    op.drop_constraint(_STAGE_CHECK, "ddbcdc_dead_letters", type_="check")
    op.create_check_constraint(
        _STAGE_CHECK, "ddbcdc_dead_letters", "stage IN ('decode', 'cleanse', 'apply', 'backfill')"
    )


def downgrade() -> None:
    # Kept, not deleted: an older ddbcdc shows them as cleanse failures.
    op.execute(sa.text("UPDATE ddbcdc_dead_letters SET stage = 'cleanse' WHERE stage = 'backfill'"))
    op.drop_constraint(_STAGE_CHECK, "ddbcdc_dead_letters", type_="check")
    op.create_check_constraint(
        _STAGE_CHECK, "ddbcdc_dead_letters", "stage IN ('decode', 'cleanse', 'apply')"
    )
    op.drop_column("ddbcdc_dead_letters", "error_reason")
    op.drop_column("ddbcdc_dead_letters", "error_column")
    op.drop_table("ddbcdc_backfills")
    op.drop_table("ddbcdc_mapping_versions")
