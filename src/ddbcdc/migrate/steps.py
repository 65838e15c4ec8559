"""A step of a migration plan, and the exact statements Alembic writes for it."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

from alembic.migration import MigrationContext
from alembic.operations import Operations

__all__ = ["Step", "render"]


@dataclass(frozen=True, slots=True)
class Step:
    """One thing a plan does.

    Attributes:
        action: ``create table``, ``add column``, ``drop column``, ``retype column``,
            ``drop not null``, ``set not null`` (after the backfill), ``drop table``, or, when
            the delete modes change, ``delete rows`` or ``unmark rows``.
        table: the table it changes.
        detail: what, in words (``city TEXT, filled from attributes``).
        sql: the exact statements it runs.
        destructive: loses data; refused unless allowed.
    """

    action: str
    table: str
    detail: str
    sql: tuple[str, ...]
    destructive: bool = False


def render(build: Callable[[Operations], None]) -> tuple[str, ...]:
    """The statements Alembic's PostgreSQL dialect writes for ``build``."""
    out = io.StringIO()
    context = MigrationContext.configure(
        dialect_name="postgresql", opts={"as_sql": True, "output_buffer": out}
    )
    build(Operations(context))
    return tuple(s.strip() for s in out.getvalue().split(";\n") if s.strip())
