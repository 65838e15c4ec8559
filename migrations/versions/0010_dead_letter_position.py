"""Dead letters say where in a file their record was.

- New column ``ddbcdc_dead_letters.source_position``: for a record ``ddbcdc apply`` read from
  a file, the file and where in it (``changes.jsonl, line 12``, ``event.json, Records[3]
  (line 41)``); NULL for a record of a stream (its shard and sequence number say where).

Revision ID: 0010_dead_letter_position
Revises: 0009_shard_failures
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_dead_letter_position"
down_revision: str | None = "0009_shard_failures"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("ddbcdc_dead_letters", sa.Column("source_position", sa.Text))


def downgrade() -> None:
    op.drop_column("ddbcdc_dead_letters", "source_position")
