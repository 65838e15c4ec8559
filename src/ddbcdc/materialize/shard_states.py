"""A shard's state as PostgreSQL sees it: ok, busy, stalled, failing, ended, not started.

A shard processor's progress row moves when a batch commits, fails or finds nothing, never
during a batch: a batch that runs longer than the stall threshold (a large one isolating
poison, one waiting for a lock) would look stalled by its row alone. So every processor names
its PostgreSQL sessions after its shard (:func:`session_name`, the ``application_name`` that
``pg_stat_activity`` shows), and a shard whose row is old while one of its sessions is working
inside a transaction (:func:`working_sessions`) is **busy**, not stalled: the same verdict
``/healthz`` gives from the processor's heartbeats. A session idle in its transaction for
longer than the threshold is not working: its shard is stalled.

``pg_stat_activity`` shows another role's sessions only to a role with the privileges of
``pg_read_all_stats``; without them a long batch of another role's worker shows stalled.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa

__all__ = [
    "SESSION_PREFIX",
    "current_failure",
    "session_name",
    "session_tag",
    "shard_state",
    "with_failures",
    "working_sessions",
]

#: Every shard processor session's ``application_name`` starts with it.
SESSION_PREFIX = "ddbcdc "
_NAME_BYTES = 63  # PostgreSQL keeps the first NAMEDATALEN - 1 bytes of a name

_activity = sa.table(
    "pg_stat_activity",
    sa.column("application_name", sa.Text),
    sa.column("state", sa.Text),
    sa.column("xact_start", sa.DateTime(timezone=True)),
    sa.column("state_change", sa.DateTime(timezone=True)),
)


def session_tag(application: str, shard_id: str) -> str:
    """The ``application_name`` prefix of one shard's sessions: short, whatever the names
    (the keys of :func:`working_sessions`)."""
    digest = hashlib.blake2b(f"{application}\0{shard_id}".encode(), digest_size=5).hexdigest()
    return f"{SESSION_PREFIX}{digest} "


def session_name(application: str, shard_id: str) -> str:
    """The ``application_name`` of the sessions of ``shard_id``'s processor: a tag unique to
    the application and shard, then the shard id for a person reading ``pg_stat_activity``."""
    return f"{session_tag(application, shard_id)}{shard_id}".encode()[:_NAME_BYTES].decode(
        errors="ignore"
    )


def working_sessions(conn: sa.Connection, stall_after: float) -> dict[str, datetime]:
    """Per shard session tag, when the oldest transaction working for it began.

    Working: a statement is running (or waiting for a lock), or the transaction went idle
    less than ``stall_after`` seconds ago (the processor between two statements).
    """
    idle_for = sa.func.extract("epoch", sa.func.now() - _activity.c.state_change)
    working = sa.or_(
        _activity.c.state == "active",
        sa.and_(_activity.c.state.like("idle in transaction%"), idle_for <= stall_after),
    )
    query = sa.select(_activity.c.application_name, _activity.c.xact_start).where(
        _activity.c.application_name.startswith(SESSION_PREFIX),
        _activity.c.xact_start.is_not(None),
        working,
    )
    found: dict[str, datetime] = {}
    for name, started in conn.execute(query):
        tag = SESSION_PREFIX + name[len(SESSION_PREFIX) :].split(" ", 1)[0] + " "
        found[tag] = min(started, found.get(tag, started))
    return found


def shard_state(
    row: Mapping[str, Any],
    age: float,
    stall_after: float,
    failing: bool,
    working: Mapping[str, datetime],
) -> str:
    """The state of a shard from its progress ``row`` (``age`` seconds old)."""
    if row.get("ended_at") is not None:
        return "ended"
    if failing:
        return "failing"  # its processor is retrying a batch it cannot apply
    if row["sequence_number"] is None and row.get("max_version_us") is None:
        return "not_started"  # listed, no processor has applied or caught up on it yet
    if age <= stall_after:
        return "ok"
    return "busy" if session_tag(row["application"], row["shard_id"]) in working else "stalled"


def with_failures(
    rows: list[dict[str, Any]], failed: dict[tuple[str, str], dict[str, Any]]
) -> list[dict[str, Any]]:
    """The progress rows, and a row for each shard that failed before it had one."""
    known = {(r["application"], r["shard_id"]) for r in rows}
    first = [
        {
            "application": app,
            "shard_id": shard,
            "sequence_number": None,
            "records_total": 0,
            "batches_total": 0,
            "millis_behind_latest": None,
            "updated_at": None,
        }
        for (app, shard) in sorted(failed)
        if (app, shard) not in known
    ]
    return sorted([*rows, *first], key=lambda r: (r["application"], r["shard_id"]))


def current_failure(row: dict[str, Any], found: dict[str, Any] | None) -> dict[str, Any] | None:
    """The shard's failure while it is current: newer than its last batch or touch."""
    updated: datetime | None = row["updated_at"]
    if found is None or (updated is not None and found["failed_at"] < updated):
        return None
    return {
        "reason": found["reason"],
        "error": found["error"],
        "since": found["since"].isoformat(),
        "failed_at": found["failed_at"].isoformat(),
        "attempts": found["attempts"],
        "sequence_number": found["sequence_number"],
    }
