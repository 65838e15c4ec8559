"""``ddbcdc status``: per-shard progress and lag, read from PostgreSQL.

A shard processor refreshes its progress row with every batch, and at most every few seconds
on empty batches too, so a row older than the stall threshold means nothing has called that
shard's processor since: the shard is shown as stalled, its last MillisBehindLatest as unknown.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import OperationalError, ProgrammingError

from ddbcdc.errors import ConfigurationError, DatabaseUnavailableError
from ddbcdc.settings import Settings


def register(subparsers: Any) -> None:
    """Add the ``status`` subcommand."""
    parser = subparsers.add_parser(
        "status",
        help="per-shard progress and lag of the worker, from PostgreSQL",
        description=(
            "Read ddbcdc_shard_progress: the last applied sequence number of every shard, "
            "records and batches applied, MillisBehindLatest and the age of the last call. "
            "Exit status: 0, 1 when there is no progress yet, 3 when a shard is stalled."
        ),
    )
    parser.add_argument("--application-name", help="only this KCL application")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument(
        "--stall-after",
        type=float,
        metavar="SECONDS",
        help="a shard not called for longer is stalled (default: DDBCDC_STALL_AFTER_S, 60)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the progress rows; exit 1 when there are none, 3 when a shard is stalled."""
    from ddbcdc.tables import shard_progress

    settings = Settings()
    engine = sa.create_engine(settings.require_database_url(), hide_parameters=True)
    query = sa.select(shard_progress).order_by(
        shard_progress.c.application, shard_progress.c.shard_id
    )
    if args.application_name:
        query = query.where(shard_progress.c.application == args.application_name)
    try:
        with engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(query)]
    except ProgrammingError as exc:
        if "ddbcdc_shard_progress" in str(exc.orig):
            raise ConfigurationError(
                "table ddbcdc_shard_progress does not exist: run `ddbcdc migrate` first"
            ) from exc
        raise
    except OperationalError as exc:
        raise DatabaseUnavailableError(
            f"PostgreSQL unreachable: {type(exc.orig).__name__}"
        ) from exc
    finally:
        engine.dispose()
    now = datetime.now(UTC)
    stall_after = settings.stall_after_s if args.stall_after is None else args.stall_after
    shards = [_shard(row, now, stall_after) for row in rows]
    if args.json:
        print(json.dumps({"now": now.isoformat(), "shards": shards}, indent=2))
    else:
        _print_table(shards)
    if not shards:
        return 1
    return 3 if any(s["stalled"] for s in shards) else 0


def _shard(row: dict[str, Any], now: datetime, stall_after: float) -> dict[str, Any]:
    updated: datetime = row["updated_at"]
    age = (now - updated).total_seconds()
    return {
        "application": row["application"],
        "shard_id": row["shard_id"],
        "sequence_number": row["sequence_number"],
        "records_total": row["records_total"],
        "batches_total": row["batches_total"],
        "millis_behind_latest": row["millis_behind_latest"],
        "updated_at": updated.isoformat(),
        "seconds_since_update": round(age, 3),
        "stalled": age > stall_after,
    }


def _print_table(shards: list[dict[str, Any]]) -> None:
    if not shards:
        print("no shard progress yet (has the worker applied a batch?)")
        return
    header = (
        "APPLICATION", "SHARD", "STATE", "RECORDS", "BATCHES", "BEHIND_MS", "AGE_S", "SEQUENCE",
    )  # fmt: skip
    lines = [header] + [
        (
            s["application"],
            s["shard_id"],
            "stalled" if s["stalled"] else "ok",
            str(s["records_total"]),
            str(s["batches_total"]),
            # A stalled shard's last MillisBehindLatest says nothing about its lag now.
            "-"
            if s["stalled"] or s["millis_behind_latest"] is None
            else str(s["millis_behind_latest"]),
            f"{s['seconds_since_update']:.1f}",
            s["sequence_number"],
        )
        for s in shards
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    for line in lines:
        cells = [cell.ljust(w) for cell, w in zip(line[:-1], widths, strict=True)]
        print("  ".join([*cells, line[-1]]))
