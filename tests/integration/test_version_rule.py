"""The version rule on a real PostgreSQL (docs/correctness.md), whichever change arrives first.

A change applies only when its version ``(ApproximateCreationDateTime in us, sequence number
or -1, event id)`` is greater than the version its key holds: an equal version never replaces
(a redelivery, a replayed dead letter, a re-run import), and every tie has one winner
whatever the order of arrival and however the changes are batched. The database sorts text
in en-US (ICU), not in C: event ids still compare byte by byte.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import pytest
import sqlalchemy as sa

from change_records import record
from ddbcdc.pipeline import BatchResult, Pipeline, SourceRecord
from ddbcdc.schema.mapping import parse_mapping
from ddbcdc.schema.tables import mapped_tables

# A mapping of its own: its tables are made from ddbcdc.schema.tables, not a fixed revision.
MAPPINGS = (
    parse_mapping(
        {
            "source_table": "customers",
            "target_table": "tie_customers",
            "key": ["userid"],
            "columns": [
                {"name": "userid", "type": "bigint"},
                {"name": "first_name", "type": "text"},
            ],
        },
        name="tie_customers",
    ),
)
TABLES = mapped_tables(MAPPINGS)["tie_customers"]
T = 1_700_000_000_123_456
KEY = 1

#: A change: (event, us, sequence number or None, event id, first_name).
Change = tuple[str, int, str | None, str, str]


@pytest.fixture(scope="module")
def engine(fresh_database: Callable[..., AbstractContextManager[str]]) -> Iterator[sa.Engine]:
    # en-US sorts "a" before "Z", C (byte order) after: the rule must not depend on it.
    with fresh_database("t_version_rule", mappings=MAPPINGS, icu_locale="en-US") as url:
        eng = sa.create_engine(url)
        yield eng
        eng.dispose()


@pytest.fixture
def pipeline(engine: sa.Engine) -> Pipeline:
    return Pipeline(engine=engine, mappings=MAPPINGS)


def clear(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        for table in TABLES.all:
            conn.execute(sa.delete(table))


def source(change: Change) -> SourceRecord:
    event, us, sequence, eid, name = change
    image = None if event == "REMOVE" else {"first_name": name}
    data = record(event, {"userid": KEY}, us, image=image, eid=eid)
    return SourceRecord(data, shard_id="shardId-000000000001", sequence_number=sequence)


def apply(pipeline: Pipeline, *batches: list[Change]) -> BatchResult:
    total = BatchResult()
    for batch in batches:
        total.add(pipeline.process([source(c) for c in batch]))
    return total


def state(engine: sa.Engine) -> tuple[str | None, tuple[int, int, str] | None]:
    """The live row's first_name (None: no row) and the key's stored version."""
    live, ver = TABLES.live, TABLES.versions
    with engine.connect() as conn:
        name = conn.execute(sa.select(live.c.first_name).where(live.c.userid == KEY)).scalar()
        version = conn.execute(
            sa.select(
                ver.c._ddbcdc_version_us,
                sa.func.coalesce(ver.c._ddbcdc_sequence, -1),
                ver.c._ddbcdc_event_id,
            ).where(ver.c.userid == KEY)
        ).one_or_none()
    return name, None if version is None else (int(version[0]), int(version[1]), version[2])


# Each group: changes of one key in ascending version order; the last one must win.
TIES: dict[str, list[Change]] = {
    # the later time wins, whatever its sequence number and event id
    "time": [("MODIFY", T, "99", "z", "t0"), ("MODIFY", T + 1, "1", "a", "t1")],
    # same microsecond, same shard: the later in the shard wins (numerically: 3 < 20)
    "sequence": [
        ("MODIFY", T, "3", "z", "s3"),
        ("MODIFY", T, "20", "a", "s20"),
        ("MODIFY", T, "1" + "0" * 55, "0", "s1e55"),
    ],
    # a change without a sequence number (a file, a snapshot row) counts as -1
    "unsequenced": [("MODIFY", T, None, "zzz", "none"), ("MODIFY", T, "0", "a", "zero")],
    # then the greater event id, compared byte by byte ("Z" < "a" < "b"), in any collation
    "event id": [
        ("MODIFY", T, None, "Z", "Z"),
        ("MODIFY", T, None, "a", "a"),
        ("MODIFY", T, None, "b", "b"),
    ],
    # a REMOVE is a change like any other: the newer one decides
    "remove wins": [("INSERT", T, "5", "i", "ins"), ("REMOVE", T, "6", "r", "")],
    "insert wins": [("REMOVE", T, "5", "r", ""), ("INSERT", T, "5", "s", "back")],
}


def expected(group: list[Change]) -> tuple[str | None, tuple[int, int, str]]:
    event, us, sequence, eid, name = group[-1]
    version = (us, -1 if sequence is None else int(sequence), eid)
    return (None if event == "REMOVE" else name), version


@pytest.mark.parametrize("split", ["one batch", "a batch each"])
@pytest.mark.parametrize("tie", sorted(TIES))
def test_a_tie_has_one_winner_whichever_arrives_first(
    pipeline: Pipeline, engine: sa.Engine, tie: str, split: str
) -> None:
    group = TIES[tie]
    for order in itertools.permutations(group):
        clear(engine)
        batches = [list(order)] if split == "one batch" else [[c] for c in order]
        result = apply(pipeline, *batches)
        assert state(engine) == expected(group), f"arrival order {[c[3] for c in order]}"
        assert result.upserted + result.deleted + result.stale == len(group)
        assert result.dead_lettered == 0


@pytest.mark.parametrize(
    ("first", "again"),
    [
        (("INSERT", T, "5", "e", "first"), ("MODIFY", T, "5", "e", "second")),
        (("INSERT", T, None, "e", "first"), ("INSERT", T, None, "e", "second")),
        (("INSERT", T, "5", "e", "first"), ("REMOVE", T, "5", "e", "")),
        (("REMOVE", T, "5", "e", ""), ("INSERT", T, "5", "e", "second")),
    ],
    ids=["modify", "unsequenced", "remove after insert", "insert after remove"],
)
def test_an_equal_version_never_replaces(
    pipeline: Pipeline, engine: sa.Engine, first: Change, again: Change
) -> None:
    clear(engine)
    apply(pipeline, [first])
    before = state(engine)
    result = apply(pipeline, [again])
    assert state(engine) == before
    assert (result.upserted, result.deleted, result.stale) == (0, 0, 1)
