"""A hand-written floor for ``ddbcdc apply``: the least work that materializes the file.

For the customers shape only, with none of ddbcdc's checks: ``orjson.loads`` per line, the
values taken straight from the attribute maps, the newest change per key kept in a dict,
the batch COPYed (binary-free text COPY) into a temporary staging table, then per batch one
guarded upsert, one guarded delete and one tombstone upsert (and, with ``--change-log``, a
COPY of every change into the change-log table), one transaction per batch. It creates its
own tables (``customers``, ``floor_tombstones``, ``floor_changes``) in an empty database.

Not a tool: a yardstick. ``benchmarks/apply_bench.py`` runs it beside ``ddbcdc apply`` on the
same file and PostgreSQL and checks that both end with the same live rows.

    DATABASE_URL=... .venv/bin/python benchmarks/apply_floor.py FILE [--batch-size 5000]
        [--change-log]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from typing import Any, BinaryIO

import orjson
import psycopg

_DDL = """
CREATE TABLE IF NOT EXISTS customers (
    userid bigint PRIMARY KEY, first_name text, last_name text, phone text,
    v_us bigint NOT NULL, eid text COLLATE "C" NOT NULL);
CREATE TABLE IF NOT EXISTS floor_tombstones (
    userid bigint PRIMARY KEY, v_us bigint NOT NULL, eid text COLLATE "C" NOT NULL);
CREATE TABLE IF NOT EXISTS floor_changes (
    eid text COLLATE "C" PRIMARY KEY, op text NOT NULL, userid bigint NOT NULL,
    v_us bigint NOT NULL, row jsonb);
CREATE TEMPORARY TABLE stage (
    userid bigint, first_name text, last_name text, phone text, v_us bigint, eid text,
    op text) ON COMMIT DELETE ROWS;
"""
_UPSERT = """
INSERT INTO customers AS c (userid, first_name, last_name, phone, v_us, eid)
SELECT s.userid, s.first_name, s.last_name, s.phone, s.v_us, s.eid FROM stage s
WHERE s.op <> 'REMOVE' AND NOT EXISTS (
    SELECT 1 FROM floor_tombstones t
    WHERE t.userid = s.userid AND (t.v_us, t.eid) > (s.v_us, s.eid COLLATE "C"))
ON CONFLICT (userid) DO UPDATE SET first_name = excluded.first_name,
    last_name = excluded.last_name, phone = excluded.phone, v_us = excluded.v_us,
    eid = excluded.eid
WHERE (c.v_us, c.eid) < (excluded.v_us, excluded.eid)
"""
_DELETE = """
DELETE FROM customers c USING stage s
WHERE s.op = 'REMOVE' AND c.userid = s.userid AND (c.v_us, c.eid) < (s.v_us, s.eid COLLATE "C")
"""
_TOMBSTONE = """
INSERT INTO floor_tombstones AS t (userid, v_us, eid)
SELECT s.userid, s.v_us, s.eid FROM stage s WHERE s.op = 'REMOVE'
ON CONFLICT (userid) DO UPDATE SET v_us = excluded.v_us, eid = excluded.eid
WHERE (t.v_us, t.eid) < (excluded.v_us, excluded.eid)
"""


def _text(attribute: Any) -> str | None:
    if attribute is None:
        return None
    value = attribute.get("S")
    if value is None:
        value = attribute.get("N")
    return None if value is None else str(value)


def _change(line: bytes) -> tuple[int, tuple[Any, ...], tuple[Any, ...]]:
    doc = orjson.loads(line)
    body = doc["dynamodb"]
    userid = int(body["Keys"]["userid"]["N"])
    image = body.get("NewImage") or {}
    op = doc["eventName"]
    row = (
        userid,
        _text(image.get("first_name")),
        _text(image.get("last_name")),
        _text(image.get("phone")),
        int(body["ApproximateCreationDateTime"]),
        doc["eventID"],
        op,
    )
    image_json = None if op == "REMOVE" else orjson.dumps(image).decode()
    log = (doc["eventID"], op, userid, row[4], image_json)
    return userid, row, log


def _batches(stream: BinaryIO, size: int) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    for line in stream:
        line = line.strip()
        if line:
            batch.append(line)
            if len(batch) == size:
                yield batch
                batch = []
    if batch:
        yield batch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file")
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--change-log", action="store_true")
    args = parser.parse_args()
    url = os.environ["DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn, open(args.file, "rb") as stream:
        conn.execute(_DDL)
        conn.commit()
        for batch in _batches(stream, args.batch_size):
            newest: dict[int, tuple[Any, ...]] = {}
            logs = []
            for line in batch:
                userid, row, log = _change(line)
                held = newest.get(userid)
                if held is None or (held[4], held[5]) < (row[4], row[5]):
                    newest[userid] = row
                logs.append(log)
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy("COPY stage FROM STDIN") as copy:
                    for row in newest.values():
                        copy.write_row(row)
                if args.change_log:
                    with cur.copy("COPY floor_changes FROM STDIN") as copy:
                        for log in logs:
                            copy.write_row(log)
                cur.execute(_UPSERT)
                cur.execute(_DELETE)
                cur.execute(_TOMBSTONE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
