"""The fence every batch passes: its tables' write locks, then their recorded mappings.

- New: the function ``ddbcdc_fence(keys bigint[], targets text[])``. It takes the advisory
  locks ``keys`` shared, in ascending order (the write locks of the tables a batch writes,
  which a prune and ``ddbcdc migrate`` take exclusively), and only then reads the recorded
  mapping digest of each table in ``targets``. In one round trip, with the read seeing every
  migration committed while the locks were waited for: a VOLATILE function takes a fresh
  snapshot for each statement it runs (a single SQL statement would read with the snapshot
  taken before its locks were granted).

Revision ID: 0007_mapping_fence
Revises: 0006_freshness
Create Date: 2026-12-09
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007_mapping_fence"
down_revision: str | None = "0006_freshness"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FENCE = """
CREATE FUNCTION ddbcdc_fence(keys bigint[], targets text[])
RETURNS TABLE (target_table text, digest text)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(k) FROM unnest(keys) AS k ORDER BY k;
    RETURN QUERY
        SELECT v.target_table, v.digest
        FROM ddbcdc_mapping_versions AS v
        WHERE v.target_table = ANY (targets);
END
$$
"""


def upgrade() -> None:
    op.execute(_FENCE)


def downgrade() -> None:
    op.execute("DROP FUNCTION ddbcdc_fence(bigint[], text[])")
