"""``ddbcdc status``: per-shard progress and lag, freshness, stream time and pruning.

Everything comes from PostgreSQL. A shard processor refreshes its progress row with every
batch, and at most every few seconds on empty batches too, so a row older than the stall
threshold means nothing has called that shard's processor since: the shard is shown as
stalled, its last MillisBehindLatest as unknown, unless a session of its processor is working
inside a transaction (a long batch): then it is busy
(:mod:`ddbcdc.materialize.shard_states`). A shard that has ended (resharding) is shown as
ended, one the worker listed but whose processor has applied nothing as not started, one
whose processor is retrying a batch it cannot apply as failing, with the reason
(``statement_timeout``, ``lock_timeout``, ``database``, ``unexpected``), since when and how
many attempts (``ddbcdc_shard_failures``, written after each failed attempt). Each
shard's stream time (the newest change time it has applied) is shown, and per application
the stream time (the oldest over its open shards, see :mod:`ddbcdc.materialize.streamtime`);
per table, the newest change committed and when (freshness); per routed mapping, the items no
route takes (in its catch-all table, or dead letters without one); tombstone pruning (floor per
table, holds) and backfills close the report.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import OperationalError, ProgrammingError

from ddbcdc.db import create_engine, describe
from ddbcdc.errors import ConfigurationError, DatabaseUnavailableError
from ddbcdc.materialize.shard_states import (
    current_failure,
    session_tag,
    shard_state,
    with_failures,
    working_sessions,
)
from ddbcdc.settings import Settings

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def register(subparsers: Any) -> None:
    """Add the ``status`` subcommand."""
    parser = subparsers.add_parser(
        "status",
        help="per-shard progress and lag of the worker, and backfills, from PostgreSQL",
        description=(
            "Read ddbcdc_shard_progress: the state, last applied sequence number and stream "
            "time of every shard, records and batches applied, MillisBehindLatest and the age "
            "of the last call; the stream time of each application; per table, the newest "
            "change committed and when; tombstone pruning; and the newest backfills "
            "(snapshots, export imports) with their progress. A shard whose batch keeps "
            "failing is shown with the reason (statement_timeout, lock_timeout, database, "
            "unexpected) and since when. Exit status: 0, 1 when there is no progress yet, 3 "
            "when a shard is stalled or failing."
        ),
    )
    parser.add_argument("--application-name", help="only this KCL application")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument(
        "--stall-after",
        type=float,
        metavar="SECONDS",
        help=(
            "a shard not called for longer is stalled, unless its processor is working on a "
            "batch: busy (default: DDBCDC_STALL_AFTER_S, 60)"
        ),
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the progress rows; exit 1 when there are none, 3 when a shard is stalled or
    failing."""
    from ddbcdc.backfill.state import recent_runs
    from ddbcdc.migrate.routes import unmatched_items
    from ddbcdc.schema.bookkeeping import shard_failures, shard_progress

    settings = Settings()
    engine = create_engine(settings.require_database_url())
    query = sa.select(shard_progress).order_by(
        shard_progress.c.application, shard_progress.c.shard_id
    )
    failures = sa.select(shard_failures)
    if args.application_name:
        query = query.where(shard_progress.c.application == args.application_name)
        failures = failures.where(shard_failures.c.application == args.application_name)
    try:
        with engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(query)]
            failed = {(r.application, r.shard_id): dict(r._mapping) for r in conn.execute(failures)}
            streams = _stream_times(conn, args.application_name)
            tables = _freshness(conn, args.application_name)
            unmatched = unmatched_items(conn)
            pruning = _pruning(conn)
            runs = [_backfill(run, datetime.now(UTC)) for run in recent_runs(conn)]
            stall_after = settings.stall_after_s if args.stall_after is None else args.stall_after
            working = working_sessions(conn, stall_after)
    except ProgrammingError as exc:
        for name in (
            "ddbcdc_shard_progress",
            "ddbcdc_shard_failures",
            "ddbcdc_stream_time",
            "ddbcdc_table_progress",
            "ddbcdc_snapshots",
            "ddbcdc_prune_state",
            "ddbcdc_mapping_versions",
        ):
            if name in str(exc.orig):
                raise ConfigurationError(
                    f"table {name} does not exist: run `ddbcdc migrate` first"
                ) from exc
        raise
    except OperationalError as exc:
        raise DatabaseUnavailableError(f"PostgreSQL: {describe(exc)}") from exc
    finally:
        engine.dispose()
    now = datetime.now(UTC)
    shards = [_shard(row, now, stall_after, failed, working) for row in with_failures(rows, failed)]
    for table in tables:
        table["newest_change_age_s"] = round(now.timestamp() - table.pop("_newest_s"), 3)
    if args.json:
        document = {
            "now": now.isoformat(),
            "shards": shards,
            "stream_times": streams,
            "tables": tables,
            "unmatched": unmatched,
            **pruning,
            "backfills": runs,
        }
        print(json.dumps(document, indent=2))
    else:
        _print_table(shards)
        _print_failures(shards)
        _print_streams(streams)
        _print_freshness(tables)
        _print_unmatched(unmatched)
        _print_pruning(pruning)
        _print_backfills(runs)
    if not shards:
        return 1
    return 3 if any(s["state"] in ("stalled", "failing") for s in shards) else 0


def _iso_us(us: int | None) -> str | None:
    return None if us is None else (_EPOCH + timedelta(microseconds=us)).isoformat()


def _stream_times(conn: sa.Connection, application: str | None) -> list[dict[str, Any]]:
    from ddbcdc.materialize.streamtime import stream_times

    return [
        {
            "application": t.application,
            "stream_time": _iso_us(t.stream_time_us),
            "current": t.current,
            "why_not_current": t.why_unknown(),
            "open_shards": t.open_shards,
            "not_started": list(t.not_started),
            "shards_listed_at": None if t.listed_at is None else t.listed_at.isoformat(),
        }
        for t in stream_times(conn, store=False)
        if application is None or t.application == application
    ]


def _print_streams(streams: list[dict[str, Any]]) -> None:
    for s in streams:
        line = f"stream time of {s['application']}: {s['stream_time'] or 'unknown'}"
        if s["why_not_current"]:
            line += f" (not advancing: {s['why_not_current']})"
        print(line)


def _freshness(conn: sa.Connection, application: str | None) -> list[dict[str, Any]]:
    """Per target table: the newest change committed (over every shard) and when."""
    from sqlalchemy.dialects.postgresql import distinct_on

    from ddbcdc.schema.bookkeeping import table_progress as t

    query = (
        sa.select(t.c.target_table, t.c.newest_change_us, t.c.committed_at)
        .ext(distinct_on(t.c.target_table))
        .order_by(t.c.target_table, t.c.newest_change_us.desc())
    )
    if application:
        query = query.where(t.c.application == application)
    return [
        {
            "target_table": r.target_table,
            "newest_change": _iso_us(r.newest_change_us),
            "committed_at": r.committed_at.isoformat(),
            "write_to_commit_s": round(r.committed_at.timestamp() - r.newest_change_us / 1e6, 3),
            "_newest_s": r.newest_change_us / 1e6,
        }
        for r in conn.execute(query)
    ]


def _print_freshness(tables: list[dict[str, Any]]) -> None:
    for t in tables:
        print(
            f"newest change of {t['target_table']}: {t['newest_change']}, committed "
            f"{t['committed_at']} ({t['write_to_commit_s']:.3f}s after it was made; "
            f"{t['newest_change_age_s']:.1f}s ago)"
        )


def _print_unmatched(found: list[dict[str, Any]]) -> None:
    for m in found:
        where = m["catch_all"] or "dead letters (no catch-all)"
        print(f"unmatched items of {m['mapping']}: {m['unmatched']} in {where}")


def _pruning(conn: sa.Connection) -> dict[str, Any]:
    from ddbcdc.schema.bookkeeping import prune_holds, prune_state

    floors = [
        {
            "target_table": r.target_table,
            "floor": _iso_us(r.floor_us),
            "pruned_total": r.pruned_total,
            "pruned_at": r.pruned_at.isoformat(),
        }
        for r in conn.execute(sa.select(prune_state).order_by(prune_state.c.target_table))
    ]
    holds = [
        {
            "holder": r.holder,
            "target_table": r.target_table,
            "keeps_from": _iso_us(r.min_version_us),
            "since": r.created_at.isoformat(),
        }
        for r in conn.execute(sa.select(prune_holds).order_by(prune_holds.c.holder))
    ]
    return {"prune_floors": floors, "prune_holds": holds}


def _print_pruning(pruning: dict[str, Any]) -> None:
    for floor in pruning["prune_floors"]:
        print(
            f"tombstones of {floor['target_table']}: {floor['pruned_total']} pruned, floor "
            f"{floor['floor']} (last {floor['pruned_at']})"
        )
    for held in pruning["prune_holds"]:
        table = held["target_table"] or "every table"
        print(f"pruning of {table} held from {held['keeps_from']} by {held['holder']}")


#: A running backfill no process holds is called stopped once it is this old (seconds): a
#: starting one is marked running a moment before its process takes it.
STOPPED_AFTER_S = 60.0


def _backfill(run: dict[str, Any], now: datetime) -> dict[str, Any]:
    from ddbcdc.backfill.records import format_us

    idle = (now - run["updated_at"]).total_seconds()
    stopped = run["status"] == "running" and run["process"] is None and idle > STOPPED_AFTER_S
    return {
        "id": run["id"],
        "kind": run["kind"],
        "status": "stopped" if stopped else run["status"],
        "process": run["process"],
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
    if any(r["status"] == "stopped" for r in runs):
        print(
            "stopped: no process runs it: continue it (ddbcdc snapshot --resume, or the same "
            "--from-export command again) or abandon it (--restart)"
        )


def _shard(
    row: dict[str, Any],
    now: datetime,
    stall_after: float,
    failed: dict[tuple[str, str], dict[str, Any]],
    working: dict[str, datetime],
) -> dict[str, Any]:
    found = failed.get((row["application"], row["shard_id"]))
    failure = current_failure(row, found)
    updated: datetime | None = row["updated_at"]
    age = (now - (updated or now)).total_seconds()
    # Failing: its processor is retrying (a failed attempt within the stall threshold).
    recent = found is not None and (now - found["failed_at"]).total_seconds() <= stall_after
    failing = failure is not None and recent
    ended = row.get("ended_at")
    state = shard_state(row, age, stall_after, failing, working)
    return {
        "application": row["application"],
        "shard_id": row["shard_id"],
        "sequence_number": row["sequence_number"],
        "records_total": row["records_total"],
        "batches_total": row["batches_total"],
        "millis_behind_latest": row["millis_behind_latest"],
        "updated_at": None if updated is None else updated.isoformat(),
        "seconds_since_update": round(age, 3),
        "stream_time": _iso_us(row.get("max_version_us")),
        "ended_at": None if ended is None else ended.isoformat(),
        "state": state,
        "stalled": state == "stalled",
        # busy: a transaction of its processor is working, since then (its batch).
        "busy_since": _busy_since(row, working) if state == "busy" else None,
        "failure": failure,
    }


def _busy_since(row: dict[str, Any], working: dict[str, datetime]) -> str:
    return working[session_tag(row["application"], row["shard_id"])].isoformat()


def _print_failures(shards: list[dict[str, Any]]) -> None:
    for s in shards:
        failure = s["failure"]
        if failure is not None:
            print(
                f"{s['application']} {s['shard_id']} {s['state']}, failing since "
                f"{failure['since']}: {failure['reason']}, {failure['attempts']} attempts, "
                f"batch ending at {failure['sequence_number']}, last at "
                f"{failure['failed_at']}: {failure['error']}"
            )


def _print_table(shards: list[dict[str, Any]]) -> None:
    if not shards:
        print("no shard progress yet (has the worker applied a batch?)")
        return
    header = (
        "APPLICATION", "SHARD", "STATE", "RECORDS", "BATCHES", "BEHIND_MS", "AGE_S",
        "STREAM_TIME", "SEQUENCE",
    )  # fmt: skip
    lines = [header] + [
        (
            s["application"],
            s["shard_id"],
            s["state"],
            str(s["records_total"]),
            str(s["batches_total"]),
            # A stalled shard's last MillisBehindLatest says nothing about its lag now.
            "-"
            if s["stalled"] or s["millis_behind_latest"] is None
            else str(s["millis_behind_latest"]),
            f"{s['seconds_since_update']:.1f}",
            s["stream_time"] or "-",
            s["sequence_number"] or "-",
        )
        for s in shards
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    for line in lines:
        cells = [cell.ljust(w) for cell, w in zip(line[:-1], widths, strict=True)]
        print("  ".join([*cells, line[-1]]))
