"""The shipped customers mapping: live table, tombstones and change log.

Frozen copy of what ``ddbcdc.schema.tables.MappedTables`` builds from
``schemas/tables/customers.json`` as shipped (userid BIGINT key; first_name, last_name, phone
TEXT; change_log on). Later edits of the mapping need a new revision; mappings added later are
created by ``ddbcdc migrate``.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _version_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("_ddbcdc_version_us", sa.BigInteger, nullable=False),
        sa.Column("_ddbcdc_sequence", sa.Numeric),
        sa.Column("_ddbcdc_event_id", sa.Text(collation="C"), nullable=False),
    ]


def _now(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


def upgrade() -> None:
    op.create_table(
        "customers",
        sa.Column("userid", sa.BigInteger, primary_key=True),
        sa.Column("first_name", sa.Text),
        sa.Column("last_name", sa.Text),
        sa.Column("phone", sa.Text),
        *_version_columns(),
        _now("_ddbcdc_updated_at"),
    )
    op.create_table(
        "ddbcdc_tombstones__customers",
        sa.Column("userid", sa.BigInteger, primary_key=True),
        *_version_columns(),
        _now("_ddbcdc_deleted_at"),
    )
    op.create_index(
        "ddbcdc_tombstones__customers_v_idx",
        "ddbcdc_tombstones__customers",
        ["_ddbcdc_version_us"],
    )
    op.create_table(
        "ddbcdc_changes__customers",
        sa.Column("_ddbcdc_event_id", sa.Text(collation="C"), primary_key=True),
        sa.Column("_ddbcdc_op", sa.Text, nullable=False),
        sa.Column("userid", sa.BigInteger, nullable=False),
        sa.Column("_ddbcdc_version_us", sa.BigInteger, nullable=False),
        sa.Column("_ddbcdc_sequence", sa.Numeric),
        sa.Column("_ddbcdc_row", pg.JSONB),
        _now("_ddbcdc_received_at"),
    )


def downgrade() -> None:
    op.drop_table("ddbcdc_changes__customers")
    op.drop_index("ddbcdc_tombstones__customers_v_idx", table_name="ddbcdc_tombstones__customers")
    op.drop_table("ddbcdc_tombstones__customers")
    op.drop_table("customers")
