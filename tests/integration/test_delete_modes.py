"""Soft deletes and TTL expiry kept as an archive, on a real PostgreSQL (docs/correctness.md).

One mapping per combination of ``deletes`` and ``ttl_deletes``: what a REMOVE does to its
row by cause (a user's, DynamoDB's TTL, unknown), what the row then holds (the REMOVE's
OldImage when it has one, else what the copy held), that the version rule still decides
(a late older change neither revives nor rewrites a kept row, a newer INSERT clears the mark),
and the cause in the change log.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from change_records import record
from ddbcdc.pipeline import BatchResult, Pipeline, SourceRecord
from ddbcdc.schema.mapping import TableMapping, parse_mapping
from ddbcdc.schema.tables import DELETED_AT, REMOVED_BY, MappedTables, mapped_tables

US = 1_700_000_000_123_457
KEY = {"userid": 7}


def _mapping(deletes: str, ttl_deletes: str) -> TableMapping:
    name = f"dm_{deletes}_{ttl_deletes}"
    return parse_mapping(
        {
            "source_table": name,
            "target_table": name,
            "key": ["userid"],
            "change_log": True,
            "deletes": deletes,
            "ttl_deletes": ttl_deletes,
            "extra": {"column": "attributes"},
            "columns": [
                {"name": "userid", "type": "bigint"},
                {"name": "first_name", "type": "text"},
                {"name": "phone", "type": "bigint"},
            ],
        },
        name=name,
    )


POLICIES = [(d, t) for d in ("hard", "soft") for t in ("delete", "soft", "keep")]
MAPPINGS = tuple(_mapping(d, t) for d, t in POLICIES)
TABLES = mapped_tables(MAPPINGS)


@pytest.fixture(scope="module")
def engine(fresh_database: Callable[..., AbstractContextManager[str]]) -> Iterator[sa.Engine]:
    with fresh_database("t_delete_modes", mappings=MAPPINGS) as url:
        eng = sa.create_engine(url)
        yield eng
        eng.dispose()


@pytest.fixture
def pipeline(engine: sa.Engine) -> Iterator[Pipeline]:
    with engine.begin() as conn:
        for tables in TABLES.values():
            for table in tables.all:
                conn.execute(sa.delete(table))
    p = Pipeline(engine=engine, mappings=MAPPINGS)
    yield p


def tables(deletes: str, ttl: str) -> MappedTables:
    return TABLES[f"dm_{deletes}_{ttl}"]


def change(
    policy: tuple[str, str],
    event: str,
    us: int,
    eid: str,
    *,
    name: str | None = None,
    old: str | None = None,
    ttl: bool = False,
    phone: Any = 5,
) -> SourceRecord:
    table = f"dm_{policy[0]}_{policy[1]}"
    image = None if name is None else {"first_name": name, "phone": phone}
    old_image = None if old is None else {"first_name": old, "phone": phone, "city": "Oslo"}
    data = record(event, KEY, us, image=image, eid=eid, table=table, old_image=old_image, ttl=ttl)
    return SourceRecord(data, shard_id="shardId-1")


def apply(pipeline: Pipeline, *records: SourceRecord) -> BatchResult:
    total = BatchResult()
    for one in records:
        total.add(pipeline.process([one]))
    return total


def row(engine: sa.Engine, policy: tuple[str, str]) -> dict[str, Any] | None:
    live = tables(*policy).live
    with engine.connect() as conn:
        found = conn.execute(sa.select(live).where(live.c.userid == 7)).mappings().first()
    return None if found is None else dict(found)


def tombstone(engine: sa.Engine, policy: tuple[str, str]) -> tuple[bool, str] | None:
    ver = tables(*policy).versions
    with engine.connect() as conn:
        found = conn.execute(
            sa.select(ver.c._ddbcdc_deleted, ver.c._ddbcdc_event_id).where(ver.c.userid == 7)
        ).first()
    return None if found is None else (bool(found[0]), str(found[1]))


def at(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


@pytest.mark.parametrize("policy", POLICIES, ids=["_".join(p) for p in POLICIES])
@pytest.mark.parametrize("ttl", [False, True], ids=["user", "ttl"])
def test_a_remove_does_what_its_cause_mode_says(
    pipeline: Pipeline, engine: sa.Engine, policy: tuple[str, str], ttl: bool
) -> None:
    mode = tables(*policy).mapping.policy.mode("ttl" if ttl else "user")
    result = apply(
        pipeline,
        change(policy, "INSERT", US, "a", name="first"),
        change(policy, "MODIFY", US + 1, "b", name="last"),
        change(policy, "REMOVE", US + 2, "c", old="last", ttl=ttl),
    )
    assert (result.upserted, result.deleted, result.dead_lettered) == (2, 1, 0)
    assert tombstone(engine, policy) == (True, "c")  # the versions row records the delete
    got = row(engine, policy)
    if mode == "hard":
        assert got is None
        return
    assert got is not None
    assert (got["first_name"], got["phone"]) == ("last", 5)
    assert got["attributes"] == {"city": "Oslo"}  # the OldImage, kept columns and all
    assert (got["_ddbcdc_version_us"], got["_ddbcdc_event_id"]) == (US + 2, "c")
    marked = at(US + 2) if mode == "soft" else None
    assert got.get(DELETED_AT) == marked  # the change's time, to the microsecond


@pytest.mark.parametrize("policy", [("soft", "delete"), ("hard", "keep")], ids=["soft", "keep"])
def test_the_last_image_holds_whichever_change_arrives_first(
    pipeline: Pipeline, engine: sa.Engine, policy: tuple[str, str]
) -> None:
    ttl = policy[1] == "keep"
    remove = change(policy, "REMOVE", US + 2, "c", old="last", ttl=ttl)
    apply(pipeline, remove)  # before the changes it removes: the row is its OldImage
    assert row(engine, policy) is not None
    result = apply(
        pipeline,
        change(policy, "MODIFY", US + 1, "b", name="last"),
        change(policy, "INSERT", US, "a", name="first"),
        remove,
    )
    assert (result.upserted, result.deleted, result.stale) == (0, 0, 3)
    got = row(engine, policy)
    assert got is not None and got["first_name"] == "last"
    assert got["_ddbcdc_event_id"] == "c"


@pytest.mark.parametrize("policy", [("soft", "delete"), ("hard", "keep")], ids=["soft", "keep"])
def test_a_newer_insert_brings_the_item_back_and_an_older_change_does_not(
    pipeline: Pipeline, engine: sa.Engine, policy: tuple[str, str]
) -> None:
    ttl = policy[1] == "keep"
    apply(
        pipeline,
        change(policy, "INSERT", US, "a", name="first"),
        change(policy, "REMOVE", US + 2, "c", old="first", ttl=ttl),
        change(policy, "MODIFY", US + 1, "b", name="late"),  # older than the REMOVE
    )
    got = row(engine, policy)
    assert got is not None and got["first_name"] == "first"
    assert got.get(DELETED_AT) == (at(US + 2) if policy[0] == "soft" else None)
    apply(pipeline, change(policy, "INSERT", US + 3, "d", name="again"))
    got = row(engine, policy)
    assert got is not None and (got["first_name"], got.get(DELETED_AT)) == ("again", None)
    assert tombstone(engine, policy) == (False, "d")


def test_a_keys_only_remove_marks_the_row_the_copy_holds(
    pipeline: Pipeline, engine: sa.Engine
) -> None:
    policy = ("soft", "delete")
    apply(
        pipeline,
        change(policy, "INSERT", US, "a", name="first"),
        change(policy, "REMOVE", US + 2, "c"),
    )
    got = row(engine, policy)
    assert got is not None
    assert (got["first_name"], got["_ddbcdc_event_id"]) == ("first", "c")
    assert got[DELETED_AT] == at(US + 2)
    apply(pipeline, change(policy, "REMOVE", US + 2, "c"))  # the same REMOVE again
    again = row(engine, policy)
    assert again is not None and again[DELETED_AT] == at(US + 2)


def test_keep_leaves_a_row_without_the_last_image_as_it_was(
    pipeline: Pipeline, engine: sa.Engine
) -> None:
    policy = ("hard", "keep")
    apply(pipeline, change(policy, "INSERT", US, "a", name="first"))
    before = row(engine, policy)
    apply(pipeline, change(policy, "REMOVE", US + 2, "c", ttl=True))
    assert row(engine, policy) == before
    assert tombstone(engine, policy) == (True, "c")


def test_an_older_users_remove_never_deletes_a_row_a_newer_expiry_kept(
    pipeline: Pipeline, engine: sa.Engine
) -> None:
    policy = ("hard", "keep")
    apply(
        pipeline,
        change(policy, "INSERT", US, "a", name="first"),
        change(policy, "REMOVE", US + 5, "z", old="first", ttl=True),
    )
    result = apply(pipeline, change(policy, "REMOVE", US + 3, "b"))  # a stale copy
    assert result.stale == 1
    got = row(engine, policy)
    assert got is not None and got["first_name"] == "first"


def test_a_stale_remove_beside_a_winning_one_leaves_the_row_a_newer_remove_kept(
    pipeline: Pipeline, engine: sa.Engine
) -> None:
    """A REMOVE older than its key's tombstone loses even in a batch whose other REMOVE
    wins (so the batch runs step 2): the kept row stays the newer REMOVE's last image."""
    policy, table = ("soft", "delete"), "dm_soft_delete"
    apply(
        pipeline,
        change(policy, "INSERT", US, "a", name="first"),
        change(policy, "REMOVE", US + 5, "z", old="first"),
    )
    other = {"userid": 8}
    pipeline.process([SourceRecord(record("INSERT", other, US, eid="o1", table=table))])
    stale = record("REMOVE", KEY, US + 3, eid="b", table=table, old_image={"first_name": "old"})
    wins = record("REMOVE", other, US + 3, eid="o2", table=table, old_image={"first_name": "x"})
    result = pipeline.process([SourceRecord(stale), SourceRecord(wins)])
    assert (result.deleted, result.stale) == (1, 1)
    got = row(engine, policy)
    assert got is not None and (got["first_name"], got[DELETED_AT]) == ("first", at(US + 5))


@pytest.mark.parametrize(
    ("policy", "kept"),
    [(("hard", "keep"), True), (("hard", "soft"), True), (("hard", "delete"), False)],
    ids=["keep", "soft", "hard"],
)
def test_a_remove_of_unknown_cause_takes_the_mode_that_keeps_more(
    pipeline: Pipeline, engine: sa.Engine, policy: tuple[str, str], kept: bool
) -> None:
    apply(
        pipeline,
        change(policy, "INSERT", US, "a", name="first"),
        change(policy, "REMOVE", US + 2, "verify:run:digest"),  # a repair's REMOVE
    )
    assert (row(engine, policy) is not None) == kept


def test_an_old_image_that_does_not_fit_is_a_dead_letter_only_where_it_is_kept(
    pipeline: Pipeline, engine: sa.Engine
) -> None:
    for policy, letters in ((("soft", "delete"), 1), (("hard", "delete"), 0)):
        bad = change(policy, "REMOVE", US + 2, "c", old="x", phone="not a number")
        result = apply(pipeline, change(policy, "INSERT", US, "a", name="first"), bad)
        assert result.dead_lettered == letters, policy


def test_the_change_log_records_each_removes_cause(pipeline: Pipeline, engine: sa.Engine) -> None:
    policy = ("hard", "delete")
    apply(
        pipeline,
        change(policy, "INSERT", US, "a", name="first"),
        change(policy, "REMOVE", US + 1, "b"),
        change(policy, "INSERT", US + 2, "c", name="again"),
        change(policy, "REMOVE", US + 3, "d", ttl=True),
        change(policy, "REMOVE", US + 4, "export:e:0:1"),
    )
    log = tables(*policy).changes
    assert log is not None
    with engine.connect() as conn:
        got = dict(conn.execute(sa.select(log.c._ddbcdc_event_id, log.c[REMOVED_BY])).all())
    assert got == {"a": None, "b": "user", "c": None, "d": "ttl", "export:e:0:1": "unknown"}


def test_live_items_are_the_rows_current_selects(pipeline: Pipeline, engine: sa.Engine) -> None:
    for policy in POLICIES:
        apply(
            pipeline,
            change(policy, "INSERT", US, "a", name="first"),
            change(policy, "REMOVE", US + 2, "c", old="first", ttl=True),
        )
        mapped = tables(*policy)
        where = mapped.current()
        query = sa.select(sa.func.count()).select_from(mapped.live)
        with engine.connect() as conn:
            rows = conn.execute(query).scalar()
            live = conn.execute(query.where(where) if where is not None else query).scalar()
        assert live == 0, policy
        assert rows == (0 if mapped.mapping.policy.ttl_mode == "hard" else 1), policy
        assert (where is None) == mapped.mapping.policy.hard
