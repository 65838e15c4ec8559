"""Every change log records the cause of each REMOVE: ``_ddbcdc_removed_by``.

Every ``ddbcdc_changes__<t>`` (the shipped mapping's and those ``ddbcdc migrate`` created for
other mappings) gains ``_ddbcdc_removed_by`` (text): ``user``, ``ttl`` (DynamoDB's TTL
expired the item) or ``unknown`` for a REMOVE, NULL for an INSERT or MODIFY. Rows logged
before this revision keep NULL: their cause was not recorded. Change logs created later get
the column from :mod:`ddbcdc.schema.tables`.

Revision ID: 0008_removal_cause
Revises: 0007_mapping_fence
Create Date: 2026-12-20
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_removal_cause"
down_revision: str | None = "0007_mapping_fence"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PREFIX = "ddbcdc_changes__"
_COLUMN = "_ddbcdc_removed_by"


def _change_logs(*, with_column: bool) -> list[str]:
    inspector = sa.inspect(op.get_bind())
    names = sorted(n for n in inspector.get_table_names() if n.startswith(_PREFIX))
    has = {n: any(c["name"] == _COLUMN for c in inspector.get_columns(n)) for n in names}
    return [n for n in names if has[n] == with_column]


def upgrade() -> None:
    for name in _change_logs(with_column=False):
        op.add_column(name, sa.Column(_COLUMN, sa.Text))


def downgrade() -> None:
    for name in _change_logs(with_column=True):
        op.drop_column(name, _COLUMN)
