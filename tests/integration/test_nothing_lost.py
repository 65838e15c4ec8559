"""Nothing lost (docs/correctness.md): every record of a batch ends applied, superseded by an
applied change, or dead-lettered with its raw bytes, through :meth:`Pipeline.process`, on a
real PostgreSQL, whatever the order of the records and however they are batched.

The batch mixes valid changes (some superseded, one duplicated) with poison of every stage:
bytes that are not a record, a record of no mapped table, values the mapping refuses, a key
that would share a row, text PostgreSQL cannot hold, and a key PostgreSQL itself refuses
(over its index size limit: the batch then runs in isolation).
"""

from __future__ import annotations

import random
import string
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from change_records import record
from ddbcdc.pipeline import BatchResult, Pipeline, SourceRecord
from ddbcdc.schema.mapping import TableMapping, load_mappings, parse_mapping

SHIPPED = load_mappings(Path(__file__).resolve().parents[2] / "schemas" / "tables")
MAPPINGS: tuple[TableMapping, ...] = (
    *SHIPPED,
    parse_mapping(
        {
            "source_table": "skeys",
            "target_table": "skeys",
            "key": ["id"],
            "columns": [{"name": "id", "type": "bigint"}, {"name": "note", "type": "text"}],
        },
        name="skeys",
    ),
    parse_mapping(
        {
            "source_table": "wide",
            "target_table": "wide",
            "key": ["pk", "sk"],
            "columns": [{"name": "pk", "type": "text"}, {"name": "sk", "type": "text"}],
        },
        name="wide",
    ),
)
T = 1_700_000_000_000_000


def incompressible(size: int, seed: int) -> str:
    """Text PostgreSQL cannot compress below the btree limit (no repeats for pglz)."""
    rng = random.Random(seed)
    return "".join(rng.choices(string.ascii_letters + string.digits, k=size))


def customer(event: str, userid: int, us: int, eid: str, **image: Any) -> bytes:
    return record(event, {"userid": userid}, us, image=image or None, eid=eid)


VALID = [
    customer("INSERT", 1, T, "c1-old", first_name="old"),  # superseded by c1-new
    customer("MODIFY", 1, T + 1, "c1-new", first_name="new"),
    customer("INSERT", 2, T, "c2", first_name="two"),
    customer("INSERT", 2, T, "c2", first_name="two"),  # delivered twice
    customer("REMOVE", 3, T, "c3"),
    record("INSERT", {"id": "7"}, T, image={"note": "n"}, eid="s7", table="skeys"),
    record("INSERT", {"pk": "a", "sk": "1"}, T, eid="w1", table="wide"),
]
POISON = [
    b"not json at all",  # decode
    b'{"eventName": "INSERT", "dynamodb": {}}',  # decode: not a change record
    record("INSERT", {"userid": 4}, T, eid="x1", table="unmapped"),  # cleanse: no mapping
    customer("INSERT", 5, T, "x2", first_name=True),  # cleanse: a BOOL into text
    customer("INSERT", 6, T, "x3", last_name="a\x00b"),  # cleanse: U+0000 in text
    record("INSERT", {"id": "07"}, T, eid="x4", table="skeys"),  # cleanse: "07" is not 7
    record(  # apply: PostgreSQL refuses a key over its btree limit
        "INSERT",
        {"pk": incompressible(2048, 1), "sk": incompressible(1024, 2)},
        T,
        eid="x5",
        table="wide",
    ),
]


@pytest.fixture(scope="module")
def engine(fresh_database: Callable[..., AbstractContextManager[str]]) -> Iterator[sa.Engine]:
    with fresh_database("t_nothing_lost", mappings=MAPPINGS) as url:
        eng = sa.create_engine(url)
        yield eng
        eng.dispose()


def clear(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        for table in ("customers", "skeys", "wide", "ddbcdc_dead_letters"):
            conn.execute(sa.text(f'DELETE FROM "{table}"'))
        for table in ("customers", "skeys", "wide"):
            conn.execute(sa.text(f'DELETE FROM "ddbcdc_versions__{table}"'))
        conn.execute(sa.text('DELETE FROM "ddbcdc_changes__customers"'))


def rows(engine: sa.Engine, query: str) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(query)).all()]


@pytest.mark.parametrize("batches", [1, 3, 14])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_record_is_applied_superseded_or_dead_lettered_with_its_bytes(
    engine: sa.Engine, seed: int, batches: int
) -> None:
    clear(engine)
    pipeline = Pipeline(engine=engine, mappings=MAPPINGS)
    numbered = [(n, data) for n, data in enumerate(VALID + POISON)]
    random.Random(seed).shuffle(numbered)
    sources = [SourceRecord(data, "shardId-000000000001", str(100 + n)) for n, data in numbered]
    total = BatchResult()
    size = -(-len(sources) // batches)
    for start in range(0, len(sources), size):
        total.add(pipeline.process(sources[start : start + size]))

    assert total.received == len(VALID) + len(POISON)
    assert total.upserted + total.deleted + total.stale + total.dead_lettered == total.received
    assert total.dead_lettered == len(POISON)
    if batches == 1:  # across batches, a change applied before the one superseding it counts
        assert (total.upserted, total.deleted, total.stale) == (4, 1, 2)
    letters = rows(engine, "SELECT payload, sequence_number, stage FROM ddbcdc_dead_letters")
    assert Counter(bytes(p) for p, _, _ in letters) == Counter(POISON)
    sequence_of = {data: str(100 + n) for n, data in numbered if data in POISON}
    assert all(seq == sequence_of[bytes(p)] for p, seq, _ in letters)
    assert Counter(stage for _, _, stage in letters) == {"decode": 2, "cleanse": 4, "apply": 1}
    assert rows(engine, "SELECT userid, first_name FROM customers ORDER BY userid") == [
        (1, "new"),
        (2, "two"),
    ]
    assert rows(engine, "SELECT id FROM skeys") == [(7,)]
    assert rows(engine, "SELECT pk, sk FROM wide") == [("a", "1")]
