"""``ddbcdc dlq list|replay|discard``: inspect, re-apply or give up on dead letters.

``list`` shows pending dead letters (``--all`` includes replayed and discarded ones) as a
table or as JSON lines (``--json``, payload in base64); ``--summary`` counts them per table,
column and reason instead (``customers.phone: 312 records, S where numeric expected``), which
is how type drift in a source table shows. ``replay`` runs pending dead letters through the
pipeline again, typically after a mapping fix: those that now apply are marked replayed,
those that still fail stay pending with their new error (exit code 1 when some still fail);
a backfill's dead letter fills its column for its key again, and a snapshot's, an export's
or a repair's row is applied without the change log, as the first time. ``discard`` marks
pending dead letters as given up on (they are kept): a pending dead letter keeps the
tombstones its replay may need, so discarding lets pruning go on.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from typing import Any

import sqlalchemy as sa

from ddbcdc.commands import count, table_name
from ddbcdc.db import create_engine, describe
from ddbcdc.errors import DatabaseUnavailableError
from ddbcdc.materialize.deadletters import (
    DeadLetterCount,
    StoredDeadLetter,
    discard_dead_letters,
    list_dead_letters,
    summarize_dead_letters,
)
from ddbcdc.pipeline import BatchResult, Pipeline
from ddbcdc.runtime import tune_gc
from ddbcdc.settings import Settings

__all__ = ["register", "replay_dead_letters"]


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stage", choices=["decode", "cleanse", "apply", "backfill"])
    parser.add_argument("--table", type=table_name, help="only this source (DynamoDB) table")
    parser.add_argument("--shard", help="only this shard id")


def register(subparsers: Any) -> None:
    """Add the ``dlq`` subcommand with ``list`` and ``replay``."""
    parser = subparsers.add_parser(
        "dlq",
        help="list, replay or discard dead-lettered records",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="show dead letters")
    _filters(listing)
    listing.add_argument("--all", action="store_true", help="include replayed/discarded ones")
    listing.add_argument("--limit", type=count, default=100, help="at most N (default 100)")
    listing.add_argument("--json", action="store_true", help="JSON lines, payload in base64")
    listing.add_argument(
        "--summary", action="store_true", help="counts per table, column and reason"
    )
    listing.set_defaults(func=run_list)
    replay = actions.add_parser("replay", help="re-apply pending dead letters")
    _filters(replay)
    replay.add_argument("--batch-size", type=count, default=500, help="per transaction")
    replay.set_defaults(func=run_replay)
    discard = actions.add_parser("discard", help="give up on pending dead letters (kept)")
    _filters(discard)
    discard.add_argument("--id", type=int, action="append", dest="ids", help="this id (repeat)")
    discard.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    discard.set_defaults(func=run_discard)


def _as_json(letter: StoredDeadLetter) -> str:
    fields = {name: getattr(letter, name) for name in StoredDeadLetter.__slots__}
    fields["payload"] = base64.b64encode(letter.payload).decode("ascii")
    for name in ("received_at", "replayed_at"):
        value = fields[name]
        fields[name] = value.isoformat() if value is not None else None
    return json.dumps(fields)


def _as_row(letter: StoredDeadLetter) -> str:
    where = f" at {letter.error_path}" if letter.error_path else ""
    replayed = " (replayed)" if letter.replayed_at else ""
    replayed += " (discarded)" if letter.discarded_at else ""
    position = f"{letter.shard_id or '-'}/{letter.sequence_number or '-'}"
    if letter.source_position and not (letter.shard_id or letter.sequence_number):
        position = letter.source_position  # a file's record: the file and where in it
    return (
        f"{letter.id:>8}  {letter.received_at:%Y-%m-%d %H:%M:%S}  {letter.stage:<7}  "
        f"{letter.source_table or '-':<16}  {position}  {letter.error}{where}{replayed}"
    )


def _engine(settings: Settings) -> sa.Engine:
    return create_engine(settings.require_database_url(), pooled=False)


def format_summary(counts: list[DeadLetterCount]) -> str:
    """One line per table, column and reason: ``customers.phone: 312 records, S where
    numeric expected (cleanse)``."""
    lines = []
    for x in counts:
        where = f"{x.table or '-'}.{x.column}" if x.column else (x.table or "-")
        noun = "record" if x.count == 1 else "records"
        lines.append(f"{where}: {x.count} {noun}, {x.reason} ({x.stage})")
    total = sum(x.count for x in counts)
    lines.append(f"{total} dead letter(s)")
    return "\n".join(lines)


def _summary(args: argparse.Namespace, engine: sa.Engine) -> int:
    with engine.connect() as conn:
        counts = summarize_dead_letters(conn, include_replayed=args.all, source_table=args.table)
    if args.stage is not None:
        counts = [x for x in counts if x.stage == args.stage]
    print(format_summary(counts))
    return 0


def run_list(args: argparse.Namespace) -> int:
    """Run ``ddbcdc dlq list``."""
    engine = _engine(Settings())
    try:
        if args.summary:
            return _summary(args, engine)
        with engine.connect() as conn:
            letters = list_dead_letters(
                conn,
                include_replayed=args.all,
                stage=args.stage,
                source_table=args.table,
                shard_id=args.shard,
                limit=args.limit + 1,  # one more: whether the limit left some out
            )
    except sa.exc.DBAPIError as exc:
        raise DatabaseUnavailableError(
            f"cannot read dead letters from PostgreSQL: {describe(exc)}"
        ) from exc
    finally:
        engine.dispose()
    more = len(letters) > args.limit
    del letters[args.limit :]
    if args.json:
        for letter in letters:
            print(_as_json(letter))
        return 0
    print(
        f"{'id':>8}  {'received_at':<19}  {'stage':<7}  {'source_table':<16}  "
        "shard/sequence (or file)  error"
    )
    for letter in letters:
        print(_as_row(letter))
    if more:
        print(f"the oldest {len(letters)} dead letter(s) shown; more match (--limit, --summary)")
    else:
        print(f"{len(letters)} dead letter(s)")
    return 0


def replay_dead_letters(
    pipeline: Pipeline,
    *,
    stage: str | None = None,
    source_table: str | None = None,
    shard_id: str | None = None,
    batch_size: int = 500,
) -> BatchResult:
    """Replay every pending dead letter matching the filters, a batch per transaction.

    Rows of a snapshot, an export or a repair go through a pipeline without the change log,
    as they did the first time (:func:`ddbcdc.backfill.feed.rows_pipeline`).

    Returns:
        The summed counts; ``dead_lettered`` are those still failing.
    """
    from ddbcdc.backfill.feed import rows_pipeline
    from ddbcdc.backfill.records import is_backfill_row
    from ddbcdc.migrate.replay import replay_backfill

    unlogged = rows_pipeline(
        pipeline.engine, pipeline.mappings, tombstone_horizon=pipeline.tombstone_horizon
    )
    total = BatchResult()
    after_id = 0
    while True:
        with pipeline.engine.connect() as conn:
            letters = list_dead_letters(
                conn,
                stage=stage,
                source_table=source_table,
                shard_id=shard_id,
                after_id=after_id,
                limit=batch_size,
            )
        if not letters:
            return total
        records = [x for x in letters if x.stage != "backfill"]
        filled = [x for x in letters if x.stage == "backfill"]
        rows = [x for x in records if is_backfill_row(x.payload)]
        changes = [x for x in records if not is_backfill_row(x.payload)]
        if changes:
            total.add(pipeline.replay(changes))
        if rows:
            total.add(unlogged.replay(rows))
        if filled:
            failing = replay_backfill(pipeline.engine, pipeline.mappings, filled)
            total.add(BatchResult(received=len(filled), dead_lettered=failing))
        after_id = letters[-1].id


def run_replay(args: argparse.Namespace) -> int:
    """Run ``ddbcdc dlq replay``."""
    pipeline = Pipeline.from_settings(Settings())
    tune_gc()
    try:
        result = replay_dead_letters(
            pipeline,
            stage=args.stage,
            source_table=args.table,
            shard_id=args.shard,
            batch_size=args.batch_size,
        )
    except sa.exc.DBAPIError as exc:
        raise DatabaseUnavailableError(
            f"cannot read dead letters from PostgreSQL: {describe(exc)}"
        ) from exc
    finally:
        pipeline.close()
    replayed = result.received - result.dead_lettered
    print(
        f"replayed {replayed} of {result.received} (upserted {result.upserted}, "
        f"deleted {result.deleted}, stale {result.stale}); still failing {result.dead_lettered}"
    )
    return 1 if result.dead_lettered else 0


def _confirmed(question: str) -> bool:
    try:
        answer = input(question)
    except EOFError:  # no terminal and nothing on stdin: no
        return False
    return answer.strip().lower() in ("y", "yes")


def run_discard(args: argparse.Namespace) -> int:
    """Run ``ddbcdc dlq discard``: exit 0, 1 when nothing matched."""
    if not (args.ids or args.stage or args.table or args.shard):
        print(
            "ddbcdc dlq discard: name the dead letters (--id, --stage, --table or --shard)",
            file=sys.stderr,
        )
        return 2
    engine = _engine(Settings())
    try:
        with engine.begin() as conn:
            letters = list_dead_letters(
                conn, stage=args.stage, source_table=args.table, shard_id=args.shard, limit=None
            )
            ids = [x.id for x in letters if not args.ids or x.id in set(args.ids)]
            question = f"discard {len(ids)} pending dead letter(s)? [y/N] "
            if ids and not args.yes and not _confirmed(question):
                print("nothing discarded")
                return 1
            count = discard_dead_letters(conn, ids)
    except sa.exc.DBAPIError as exc:
        raise DatabaseUnavailableError(
            f"cannot discard dead letters in PostgreSQL: {describe(exc)}"
        ) from exc
    finally:
        engine.dispose()
    print(f"discarded {count} dead letter(s)")
    return 0 if count else 1
