"""Why a shard's batch is not being applied, kept where ``ddbcdc status`` can read it.

A shard processor that cannot apply a batch retries it forever (never checkpointing past
it); after each failed attempt, :class:`FailureNote` records the reason (``statement_timeout``,
``lock_timeout``, ``database``, ``unexpected``) in ``ddbcdc_shard_failures``
(:func:`ddbcdc.materialize.progress.record_failure`). The note is a signal, not part of
applying records: it runs in a transaction of its own, with timeouts of its own (a role whose
``statement_timeout`` fails the batch must not fail the note), and a note that cannot be
written is logged once and never raised (the processor tries it again while it waits: once
it is written, PostgreSQL is back). An error nobody expected is named by its type and where
it came from, never by its message (:func:`describe_unexpected`).
"""

from __future__ import annotations

import logging
import traceback

import sqlalchemy as sa

from ddbcdc.materialize.progress import ShardPosition, record_failure

__all__ = ["FailureNote", "describe_unexpected"]

log = logging.getLogger(__name__)

#: The note's own limits: short, whatever the role's settings are.
_LIMITS = ("SET LOCAL statement_timeout = '5s'", "SET LOCAL lock_timeout = '2s'")


class FailureNote:
    """Records a failed attempt at a batch in its own transaction; never raises.

    Args:
        engine: the pipeline's engine.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._failing = False

    def __call__(self, position: ShardPosition, reason: str, error: str) -> bool:
        """Note the failure; whether it was written."""
        try:
            with self.engine.begin() as conn:
                for limit in _LIMITS:
                    conn.execute(sa.text(limit))
                record_failure(conn, position, reason, error)
        except sa.exc.SQLAlchemyError as exc:
            if not self._failing:
                log.warning(
                    "shard failure not recorded shard=%s error=%s",
                    position.shard_id,
                    type(exc).__name__,
                )
            self._failing = True
            return False
        self._failing = False
        return True


def describe_unexpected(exc: BaseException) -> str:
    """Exception type and where it came from, without its message.

    Messages of database drivers can quote statement parameters, i.e. item contents.
    """
    frames = traceback.extract_tb(exc.__traceback__)[-3:]
    where = " <- ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in reversed(frames))
    return f"{type(exc).__module__}.{type(exc).__qualname__} at {where}"
