"""``ddbcdc status``: per-shard progress and lag, read from PostgreSQL."""

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
        help="per-shard progress and lag of the worker, and backfills, from PostgreSQL",
        description=(
            "Read ddbcdc_shard_progress: the last applied sequence number of every shard, "
            "records and batches applied, MillisBehindLatest at the last batch and its age; "
            "and the newest backfills (snapshots, export imports) with their progress."
        ),
    )
    parser.add_argument("--application-name", help="only this KCL application")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the progress rows; exit 1 when there are none."""
    from ddbcdc.backfill.state import recent_runs
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
            runs = [_backfill(run) for run in recent_runs(conn)]
    except ProgrammingError as exc:
        for name in ("ddbcdc_shard_progress", "ddbcdc_snapshots"):
            if name in str(exc.orig):
                raise ConfigurationError(
                    f"table {name} does not exist: run `ddbcdc migrate` first"
                ) from exc
        raise
    except OperationalError as exc:
        raise DatabaseUnavailableError(
            f"PostgreSQL unreachable: {type(exc.orig).__name__}"
        ) from exc
    finally:
        engine.dispose()
    now = datetime.now(UTC)
    shards = [_shard(row, now) for row in rows]
    if args.json:
        print(json.dumps({"now": now.isoformat(), "shards": shards, "backfills": runs}, indent=2))
    else:
        _print_table(shards)
        _print_backfills(runs)
    return 0 if shards else 1


def _backfill(run: dict[str, Any]) -> dict[str, Any]:
    from ddbcdc.backfill.records import format_us

    return {
        "id": run["id"],
        "kind": run["kind"],
        "status": run["status"],
        "target_table": run["target_table"],
        "source": run["source"],
        "segments": run["segments"],
        "segments_done": run["segments_done"],
        "items": int(run["items"]),
        "expected_items": run["expected_items"],
        "as_of": format_us(run["min_version_us"]),
        "started_at": run["started_at"].isoformat(),
        "updated_at": run["updated_at"].isoformat(),
        "finished_at": run["finished_at"].isoformat() if run["finished_at"] else None,
    }


def _print_backfills(runs: list[dict[str, Any]]) -> None:
    if not runs:
        return
    print()
    header = ("BACKFILL", "STATUS", "SEGMENTS", "ITEMS", "AS_OF", "UPDATED")
    lines = [header] + [
        (
            r["id"],
            r["status"],
            f"{r['segments_done']}/{r['segments']}",
            str(r["items"]) + (f"/~{r['expected_items']}" if r["expected_items"] else ""),
            r["as_of"],
            r["updated_at"],
        )
        for r in runs
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


def _shard(row: dict[str, Any], now: datetime) -> dict[str, Any]:
    updated: datetime = row["updated_at"]
    return {
        "application": row["application"],
        "shard_id": row["shard_id"],
        "sequence_number": row["sequence_number"],
        "records_total": row["records_total"],
        "batches_total": row["batches_total"],
        "millis_behind_latest": row["millis_behind_latest"],
        "updated_at": updated.isoformat(),
        "seconds_since_update": round((now - updated).total_seconds(), 3),
    }


def _print_table(shards: list[dict[str, Any]]) -> None:
    if not shards:
        print("no shard progress yet (has the worker applied a batch?)")
        return
    header = ("APPLICATION", "SHARD", "RECORDS", "BATCHES", "BEHIND_MS", "AGE_S", "SEQUENCE")
    lines = [header] + [
        (
            s["application"],
            s["shard_id"],
            str(s["records_total"]),
            str(s["batches_total"]),
            "-" if s["millis_behind_latest"] is None else str(s["millis_behind_latest"]),
            f"{s['seconds_since_update']:.1f}",
            s["sequence_number"],
        )
        for s in shards
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    for line in lines:
        cells = [cell.ljust(w) for cell, w in zip(line[:-1], widths, strict=True)]
        print("  ".join([*cells, line[-1]]))
