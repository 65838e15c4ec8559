"""``ddbcdc status``: per-shard progress and lag, and tombstone pruning, from PostgreSQL.

A shard processor refreshes its progress row with every batch, and at most every few seconds
on empty batches too, so a row older than the stall threshold means nothing has called that
shard's processor since: the shard is shown as stalled, its last MillisBehindLatest as unknown.
A shard that has ended (resharding) is shown as ended. A shard whose processor is retrying a
batch it cannot apply is shown as failing, with the reason (``statement_timeout``,
``lock_timeout``, ``database``, ``unexpected``), since when and how many attempts
(``ddbcdc_shard_failures``, written by the processor after each failed attempt). Each shard's
stream time (the newest change time it has applied) is shown too: the oldest of them bounds
tombstone pruning, whose floor per table and holds (snapshots, imports) close the report.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import OperationalError, ProgrammingError

from ddbcdc.errors import ConfigurationError, DatabaseUnavailableError
from ddbcdc.settings import Settings

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def register(subparsers: Any) -> None:
    """Add the ``status`` subcommand."""
    parser = subparsers.add_parser(
        "status",
        help="per-shard progress and lag of the worker, and backfills, from PostgreSQL",
        description=(
            "Read ddbcdc_shard_progress: the last applied sequence number of every shard, "
            "records and batches applied, MillisBehindLatest and the age of the last call; "
            "tombstone pruning; and the newest backfills (snapshots, export imports) with "
            "their progress. A shard whose batch keeps failing is shown with the reason "
            "(statement_timeout, lock_timeout, database, unexpected) and since when. Exit "
            "status: 0, 1 when there is no progress yet, 3 when a shard is stalled or failing."
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
    """Print the progress rows; exit 1 when there are none, 3 when a shard is stalled or
    failing."""
    settings = Settings()
    rows, failed, pruning, runs = _read(settings, args.application_name)
    now = datetime.now(UTC)
    stall_after = settings.stall_after_s if args.stall_after is None else args.stall_after
    shards = [_shard(row, now, stall_after, failed) for row in _with_failures(rows, failed)]
    if args.json:
        document = {"now": now.isoformat(), "shards": shards, **pruning, "backfills": runs}
        print(json.dumps(document, indent=2))
    else:
        _print_table(shards)
        _print_failures(shards)
        _print_pruning(pruning)
        _print_backfills(runs)
    if not shards:
        return 1
    return 3 if any(s["state"] in ("stalled", "failing") for s in shards) else 0


def _read(settings: Settings, application: str | None) -> tuple[Any, ...]:
    """Progress rows, failures by shard, pruning and backfills, from PostgreSQL."""
    from ddbcdc.backfill.state import recent_runs
    from ddbcdc.schema.tables import shard_failures, shard_progress

    engine = sa.create_engine(settings.require_database_url(), hide_parameters=True)
    query = sa.select(shard_progress).order_by(
        shard_progress.c.application, shard_progress.c.shard_id
    )
    failures = sa.select(shard_failures)
    if application:
        query = query.where(shard_progress.c.application == application)
        failures = failures.where(shard_failures.c.application == application)
    try:
        with engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(query)]
            failed = {(r.application, r.shard_id): dict(r._mapping) for r in conn.execute(failures)}
            return rows, failed, _pruning(conn), [_backfill(run) for run in recent_runs(conn)]
    except ProgrammingError as exc:
        for name in (
            "ddbcdc_shard_progress",
            "ddbcdc_shard_failures",
            "ddbcdc_snapshots",
            "ddbcdc_prune_state",
        ):
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


def _iso_us(us: int | None) -> str | None:
    return None if us is None else (_EPOCH + timedelta(microseconds=us)).isoformat()


def _pruning(conn: sa.Connection) -> dict[str, Any]:
    from ddbcdc.schema.tables import prune_holds, prune_state

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


def _with_failures(
    rows: list[dict[str, Any]], failed: dict[tuple[str, str], dict[str, Any]]
) -> list[dict[str, Any]]:
    """The progress rows, and a row for each shard that failed before it had progress."""
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


def _failure(row: dict[str, Any], found: dict[str, Any] | None) -> dict[str, Any] | None:
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
        "at": found["failed_at"],
    }


def _shard(
    row: dict[str, Any],
    now: datetime,
    stall_after: float,
    failed: dict[tuple[str, str], dict[str, Any]],
) -> dict[str, Any]:
    updated: datetime | None = row["updated_at"]
    failure = _failure(row, failed.get((row["application"], row["shard_id"])))
    last = updated if updated is not None else now
    age = (now - last).total_seconds()
    ended = row.get("ended_at")
    # Failing: its processor is retrying a batch (a failed attempt within the threshold).
    failing = failure is not None and (now - failure.pop("at")).total_seconds() <= stall_after
    stalled = ended is None and not failing and age > stall_after
    state = "ended" if ended else "failing" if failing else "stalled" if stalled else "ok"
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
        "stalled": stalled,
        "failure": failure,
    }


def _print_failures(shards: list[dict[str, Any]]) -> None:
    for s in shards:
        failure = s["failure"]
        if failure is not None:
            print(
                f"{s['application']} {s['shard_id']} {s['state']}, failing since "
                f"{failure['since']}: "
                f"{failure['reason']}, {failure['attempts']} attempts, batch ending at "
                f"{failure['sequence_number']}, last at {failure['failed_at']}: "
                f"{failure['error']}"
            )


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
            s["state"],
            str(s["records_total"]),
            str(s["batches_total"]),
            # A stalled shard's last MillisBehindLatest says nothing about its lag now.
            "-"
            if s["stalled"] or s["millis_behind_latest"] is None
            else str(s["millis_behind_latest"]),
            f"{s['seconds_since_update']:.1f}",
            s["sequence_number"] or "-",
        )
        for s in shards
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    for line in lines:
        cells = [cell.ljust(w) for cell, w in zip(line[:-1], widths, strict=True)]
        print("  ".join([*cells, line[-1]]))
