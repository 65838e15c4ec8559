"""Materialize benchmark: changes/s of ``ddbcdc apply`` against the naive way, same run.

Generates CHANGES Kinesis-format change records (JSON lines, values marshalled with
``ddbcdc.decode.attributes.marshal``) over KEYS customers: per key an INSERT, then MODIFYs and
REMOVEs (a REMOVE is followed by a re-INSERT), with versions strictly increasing.

- ``apply``: the same code as ``ddbcdc apply`` (``apply_lines`` over ``Pipeline.process``):
  decode -> cleanse -> collapse -> COPY into a stage -> claim the versions rows and upsert
  the winners' live rows (one statement), delete the removed, log; one transaction per batch.
- ``naive``: the same decode and cleanse, then one Core statement per record and step
  (change-log insert, versions claim, live upsert or delete) and one commit per batch.

Both run on fresh, migrated databases of one durable PostgreSQL (``TemporaryPostgres(
durable=True)`` unless DATABASE_URL names a server, whose database is then used for both in
turn) and must end with identical tables.

    .venv/bin/python benchmarks/materialize_bench.py [--changes 200000] [--keys 20000]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import time
from collections.abc import Iterator
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from ddbcdc.cleanse import CleanChange, Cleanser
from ddbcdc.commands.apply import apply_lines
from ddbcdc.decode.attributes import marshal
from ddbcdc.decode.record import decode_record
from ddbcdc.local.postgres import TemporaryPostgres
from ddbcdc.migrate.run import downgrade, upgrade
from ddbcdc.pipeline import Pipeline
from ddbcdc.schema.mapping import TableMapping, load_mappings
from ddbcdc.schema.tables import mapped_tables
from ddbcdc.settings import Settings

BASE_US = 1_700_000_000_000_000


def _record(
    event: str,
    userid: int,
    us: int,
    serial: int,
    rng: random.Random,
    old: dict[str, Any] | None = None,
) -> tuple[bytes, dict[str, Any] | None]:
    keys = {"userid": userid}
    image = None
    if event != "REMOVE":
        first = "".join(rng.choices("abcdefghijklmnop", k=7))
        image = {
            "userid": userid,
            "first_name": f" {first} ",
            "last_name": first.upper(),
            "phone": rng.randrange(10**9, 10**10),
        }
    dynamodb: dict[str, Any] = {
        "ApproximateCreationDateTime": us,
        "Keys": marshal(keys),
        "SizeBytes": 100,
    }
    if image is not None:
        dynamodb["NewImage"] = marshal(image)
    if old is not None:
        dynamodb["OldImage"] = marshal(old)
    data = orjson.dumps(
        {
            "awsRegion": "us-east-1",
            "eventID": f"{serial:012d}-bench",
            "eventName": event,
            "userIdentity": None,
            "recordFormat": "application/json",
            "tableName": "customers",
            "dynamodb": dynamodb,
            "eventSource": "aws:dynamodb",
        }
    )
    return data, image


def generate(changes: int, keys: int, seed: int = 7, *, old_images: bool = False) -> bytes:
    """CHANGES JSON lines over KEYS keys, in version order; with ``old_images`` a REMOVE
    carries the item's last image, as Kinesis Data Streams for DynamoDB sends it."""
    rng = random.Random(seed)
    live = [False] * keys
    last: dict[int, dict[str, Any] | None] = {}
    lines = []
    for serial in range(changes):
        userid = rng.randrange(keys)
        event = "INSERT" if not live[userid] else "REMOVE" if rng.random() < 0.2 else "MODIFY"
        live[userid] = event != "REMOVE"
        old = last.get(userid) if old_images and event == "REMOVE" else None
        line, last[userid] = _record(event, userid, BASE_US + serial * 10, serial, rng, old)
        lines.append(line)
    return b"\n".join(lines) + b"\n"


class NaiveWriter:
    """One Core statement per record and step, one commit per batch (the baseline).

    The same rule as ddbcdc's: the key's versions row is claimed (upserted where older,
    locking it); a won INSERT/MODIFY upserts the live row, a won REMOVE deletes it.
    """

    def __init__(self, mapping: TableMapping) -> None:
        tables = mapped_tables([mapping])[mapping.name]
        live, ver, log = tables.live, tables.versions, tables.changes
        assert log is not None
        self.cleanser = Cleanser(mapping)
        self.columns = list(mapping.stored_columns)
        # Cleansed jsonb values are exact JSON text: cast, as the pipeline's statements do.
        self.jsonb = [n for n in self.columns if isinstance(live.c[n].type, pg.JSONB)]
        names = ("_ddbcdc_version_us", "_ddbcdc_sequence", "_ddbcdc_event_id")

        def version(cols: Any) -> Any:
            return sa.tuple_(
                cols._ddbcdc_version_us,
                sa.func.coalesce(cols._ddbcdc_sequence, -1),
                cols._ddbcdc_event_id.collate("C"),
            )

        claim = pg.insert(ver)
        self.claim = claim.on_conflict_do_update(
            index_elements=["userid"],
            set_={n: claim.excluded[n] for n in (*names, "_ddbcdc_deleted")},
            where=version(ver.c) < version(claim.excluded),
        ).returning(ver.c._ddbcdc_deleted)
        text = {n: sa.cast(sa.bindparam(n, type_=sa.Text()), pg.JSONB()) for n in self.jsonb}
        put = pg.insert(live).values(text) if text else pg.insert(live)
        self.upsert = put.on_conflict_do_update(
            index_elements=["userid"],
            set_={n: put.excluded[n] for n in (*self.columns, *names) if n != "userid"},
        )
        self.delete_live = sa.delete(live).where(live.c.userid == sa.bindparam("key"))
        self.log = pg.insert(log).on_conflict_do_nothing(index_elements=["_ddbcdc_event_id"])

    def apply(self, conn: sa.Connection, change: CleanChange) -> None:
        params: dict[str, Any] = {
            "userid": change.key[0],
            "_ddbcdc_version_us": change.approximate_creation_us,
            "_ddbcdc_sequence": change.sequence,
            "_ddbcdc_event_id": change.event_id,
        }
        logged = change.row
        if logged is not None and self.jsonb:
            logged = {**logged, **{n: json.loads(logged[n]) for n in self.jsonb if logged[n]}}
        conn.execute(self.log, {**params, "_ddbcdc_op": change.event_name, "_ddbcdc_row": logged})
        won = conn.execute(
            self.claim, {**params, "_ddbcdc_deleted": change.row is None}
        ).scalar_one_or_none()
        if won is None:
            return
        if change.row is None:
            conn.execute(self.delete_live, {"key": change.key[0]})
        else:
            conn.execute(self.upsert, {**params, **change.row})


def _batches(data: bytes, size: int) -> Iterator[list[bytes]]:
    lines = [line for line in data.splitlines() if line]
    for start in range(0, len(lines), size):
        yield lines[start : start + size]


def run_naive(engine: sa.Engine, mapping: TableMapping, data: bytes, batch_size: int) -> float:
    writer = NaiveWriter(mapping)
    started = time.perf_counter()
    for batch in _batches(data, batch_size):
        with engine.begin() as conn:
            for line in batch:
                writer.apply(conn, writer.cleanser.cleanse(decode_record(line)))
    return time.perf_counter() - started


def run_apply(
    engine: sa.Engine, mappings: tuple[TableMapping, ...], data: bytes, batch_size: int
) -> tuple[float, Any]:
    pipeline = Pipeline(engine=engine, mappings=mappings)
    started = time.perf_counter()
    result = apply_lines(pipeline, io.BytesIO(data), batch_size=batch_size)
    return time.perf_counter() - started, result


def snapshot(engine: sa.Engine, mapping: TableMapping) -> list[Any]:
    """Live rows and versions rows."""
    tables = mapped_tables([mapping])[mapping.name]

    def value(c: sa.Column[Any]) -> Any:
        return sa.cast(c, sa.Text) if isinstance(c.type, pg.JSONB) else c  # hashable

    with engine.connect() as conn:
        return [
            conn.execute(
                sa.select(*[value(c) for c in t.columns if not c.name.endswith("_at")])
            ).all()
            for t in (tables.live, tables.versions)
        ]


def fresh(engine: sa.Engine, mappings: tuple[TableMapping, ...]) -> None:
    downgrade(engine, revision="base")
    upgrade(engine, mappings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=200_000)
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument(
        "--naive-changes",
        type=int,
        default=0,
        help="run the naive way on the first N changes only (0: all)",
    )
    args = parser.parse_args()
    mappings = load_mappings(Settings().mappings_dir)
    mapping = mappings[0]
    data = generate(args.changes, args.keys)
    naive_data = data
    if args.naive_changes:
        naive_data = b"\n".join(data.splitlines()[: args.naive_changes]) + b"\n"
    url = os.environ.get("DATABASE_URL")
    server = None if url else TemporaryPostgres(durable=True).start()
    try:
        engine = sa.create_engine(url or server.url)  # type: ignore[union-attr]
        fresh(engine, mappings)
        fast_s, result = run_apply(engine, mappings, data, args.batch_size)
        fast_state = snapshot(engine, mapping) if not args.naive_changes else None
        fresh(engine, mappings)
        naive_s = run_naive(engine, mapping, naive_data, args.batch_size)
        if fast_state is not None:
            naive_state = snapshot(engine, mapping)
            for name, a, b in zip(("live", "versions"), fast_state, naive_state, strict=True):
                diff = sorted(set(a) ^ set(b))[:6]
                assert not diff, f"naive and apply disagree on {name}: {diff}"
        downgrade(engine, revision="base")
        engine.dispose()
    finally:
        if server is not None:
            server.stop()
    n_naive = naive_data.count(b"\n")
    fast, naive = args.changes / fast_s, n_naive / naive_s
    print(
        json.dumps(
            {
                "changes": args.changes,
                "keys": args.keys,
                "batch_size": args.batch_size,
                "apply_changes_per_s": round(fast),
                "naive_changes_per_s": round(naive),
                "ratio": round(fast / naive, 1),
                "apply_seconds": round(fast_s, 2),
                "naive_seconds": round(naive_s, 2),
                "naive_changes": n_naive,
                "upserted": result.upserted,
                "deleted": result.deleted,
                "stale": result.stale,
                "dead_lettered": result.dead_lettered,
                "durable": url is None or None,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
