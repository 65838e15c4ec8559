"""A hand-written floor for importing a full export: the least work that materializes it.

For the customers shape only, with none of ddbcdc's checks: per data file, ``gzip`` lines,
``orjson.loads`` per line, the values taken straight from the attribute maps, COPY of each
batch into a temporary stage, then one statement per batch: the guarded upsert of a
versions row per key (``ON CONFLICT ... DO UPDATE ... WHERE`` older), and the upsert of the
live row of every key it won; one transaction per batch. It creates its own tables
(``customers``, ``floor_versions``) in an empty database.

Not a tool: a yardstick. ``benchmarks/export_bench.py`` runs it beside ``ddbcdc snapshot
--from-export`` on the same export and PostgreSQL and checks both end with the same rows.

    DATABASE_URL=... .venv/bin/python benchmarks/export_floor.py EXPORT_DIR [--batch-size N]
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
from itertools import islice
from pathlib import Path

import orjson
import psycopg

_DDL = """
CREATE TABLE IF NOT EXISTS customers (
    userid bigint PRIMARY KEY, first_name text, last_name text, phone text,
    v_us bigint NOT NULL, eid text COLLATE "C" NOT NULL);
CREATE TABLE IF NOT EXISTS floor_versions (
    userid bigint PRIMARY KEY, v_us bigint NOT NULL, eid text COLLATE "C" NOT NULL,
    deleted boolean NOT NULL);
CREATE TEMPORARY TABLE stage (
    userid bigint, first_name text, last_name text, phone text, v_us bigint, eid text)
    ON COMMIT DELETE ROWS;
"""
_APPLY = """
WITH won AS (
    INSERT INTO floor_versions AS v (userid, v_us, eid, deleted)
    SELECT userid, v_us, eid, false FROM stage ORDER BY userid
    ON CONFLICT (userid) DO UPDATE SET v_us = excluded.v_us, eid = excluded.eid,
        deleted = false
    WHERE (v.v_us, v.eid) < (excluded.v_us, excluded.eid)
    RETURNING v.userid)
INSERT INTO customers AS c (userid, first_name, last_name, phone, v_us, eid)
SELECT s.userid, s.first_name, s.last_name, s.phone, s.v_us, s.eid
FROM stage s JOIN won USING (userid)
ON CONFLICT (userid) DO UPDATE SET first_name = excluded.first_name,
    last_name = excluded.last_name, phone = excluded.phone, v_us = excluded.v_us,
    eid = excluded.eid
"""
VERSION_US = 1_796_039_995_000_000


def _text(attribute: dict[str, str] | None) -> str | None:
    if attribute is None:
        return None
    return attribute.get("S") or attribute.get("N")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", type=Path)
    parser.add_argument("--batch-size", type=int, default=10_000)
    args = parser.parse_args()
    url = os.environ["DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        conn.execute(_DDL)
        conn.commit()
        for path in sorted((args.export / "data").iterdir()):
            with gzip.open(path, "rb") as data:
                number = 0
                while batch := list(islice(data, args.batch_size)):
                    with conn.transaction(), conn.cursor() as cur:
                        with cur.copy("COPY stage FROM STDIN") as copy:
                            for line in batch:
                                item = orjson.loads(line)["Item"]
                                copy.write_row(
                                    (
                                        int(item["userid"]["N"]),
                                        _text(item.get("first_name")),
                                        _text(item.get("last_name")),
                                        _text(item.get("phone")),
                                        VERSION_US,
                                        f"export:{path.name}:{number}",
                                    )
                                )
                                number += 1
                        cur.execute(_APPLY)
    return 0


if __name__ == "__main__":
    sys.exit(main())
