"""Every column type, and every key type, from a change record to PostgreSQL and back exactly
(the stage's binary COPY, the change log's text COPY, the versions rows)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from ddbcdc.decode.attributes import marshal
from ddbcdc.pipeline import Pipeline, SourceRecord
from ddbcdc.schema.mapping import TableMapping, parse_mapping

US = 1_700_000_000_000_000
SEQ = 49590338271490256608559692538361571095921575989136588898


def _mapping(key_type: str) -> TableMapping:
    return parse_mapping(
        {
            "source_table": "every",
            "target_table": f"every_{key_type}",
            "key": ["id"],
            "change_log": True,
            "extra": {"column": "rest"},
            "columns": [
                {"name": "id", "type": key_type},
                {"name": "small", "type": "smallint"},
                {"name": "mid", "type": "integer"},
                {"name": "big", "type": "bigint"},
                {"name": "amount", "type": "numeric"},
                {"name": "flag", "type": "boolean"},
                {"name": "blob", "type": "bytea"},
                {"name": "doc", "type": "jsonb"},
                {"name": "at", "type": "timestamptz"},
                {"name": "note", "type": "text", "rules": ["trim"]},
            ],
        },
        name=f"every_{key_type}",
    )


KEYS: dict[str, list[Any]] = {
    "bigint": [0, -(2**63), 2**63 - 1],
    "text": ["", "a\tb\\c\nd", "é∑😀"],
    "numeric": [Decimal("0.5"), Decimal("-1E+30"), Decimal("12345678901234567890.123456789")],
    "bytea": [b"", b"\x00\xff\t\n\\", bytes(range(256))],
}
MAPPINGS = tuple(_mapping(t) for t in KEYS)


@pytest.fixture(scope="module")
def engine(fresh_database: Callable[..., AbstractContextManager[str]]) -> Iterator[sa.Engine]:
    with fresh_database("t_types", mappings=MAPPINGS) as url:
        eng = sa.create_engine(url)
        yield eng
        eng.dispose()


def _record(event: str, key: Any, image: dict[str, Any] | None, us: int, seq: int) -> SourceRecord:
    dynamodb: dict[str, Any] = {"ApproximateCreationDateTime": us, "Keys": marshal({"id": key})}
    if image is not None:
        dynamodb["NewImage"] = marshal({"id": key, **image})
    doc = {
        "eventID": uuid.uuid4().hex,
        "eventName": event,
        "tableName": "every",
        "dynamodb": dynamodb,
        "eventSource": "aws:dynamodb",
    }
    return SourceRecord(orjson.dumps(doc), shard_id="shardId-1", sequence_number=str(seq))


def _image(n: int) -> dict[str, Any]:
    return {
        "small": [-(2**15), 2**15 - 1, 7][n % 3],
        "mid": [-(2**31), 2**31 - 1, 0][n % 3],
        "big": [-(2**63), 2**63 - 1, 1][n % 3],
        "amount": [Decimal("-0.000001"), Decimal("99999999999999999999999999999999999999"), 3][
            n % 3
        ],
        "flag": n % 2 == 0,
        "blob": bytes([n, 0, 255, 9, 10, 92]),
        "doc": {"n": Decimal("1.50"), "s": "tab\there", "l": [1, None, True]},
        "at": ["2024-02-29T23:59:59.999999+00:00", "1970-01-01T00:00:00Z", "9999-12-31T00:00:00"][
            n % 3
        ],
        "note": f"  line\\{n}\n  ",
        "extra_attribute": f"kept {n}",
    }


def _expected(n: int) -> dict[str, Any]:
    image = _image(n)
    at = datetime.fromisoformat(image["at"])
    return {
        **{k: image[k] for k in ("small", "mid", "big", "flag", "blob")},
        "amount": Decimal(image["amount"]),
        "doc": {"n": 1.5, "s": "tab\there", "l": [1, None, True]},
        "at": at if at.tzinfo else at.replace(tzinfo=UTC),
        "note": f"line\\{n}",
        "rest": {"extra_attribute": f"kept {n}"},
    }


@pytest.mark.parametrize("mapping", MAPPINGS, ids=list(KEYS))
def test_every_type_round_trips_exactly(engine: sa.Engine, mapping: TableMapping) -> None:
    pipeline = Pipeline(engine=engine, mappings=[mapping])
    keys = KEYS[mapping.columns[0].type]
    first = [_record("INSERT", k, _image(n), US + n, SEQ + n) for n, k in enumerate(keys)]
    result = pipeline.process(first)
    assert (result.upserted, result.dead_lettered) == (len(keys), 0), result
    # A newer MODIFY of each key (values shifted), then a REMOVE of the last key.
    newer = [
        _record("MODIFY", k, _image(n + 1), US + 10 + n, SEQ + 10 + n) for n, k in enumerate(keys)
    ]
    remove = _record("REMOVE", keys[-1], None, US + 100, SEQ + 100)
    result = pipeline.process([*newer, remove])
    assert (result.upserted, result.deleted, result.stale) == (len(keys) - 1, 1, 1), result

    live = sa.Table(mapping.target_table, sa.MetaData(), autoload_with=engine)
    with engine.connect() as conn:
        rows = {r.id: r._mapping for r in conn.execute(sa.select(live))}
        versions = conn.execute(
            sa.text(
                "SELECT id, _ddbcdc_sequence, _ddbcdc_deleted"
                f" FROM ddbcdc_versions__{mapping.target_table}"
            )
        ).all()
        logged = conn.execute(
            sa.text(f"SELECT count(*) FROM ddbcdc_changes__{mapping.target_table}")
        ).scalar()
    assert set(rows) == set(keys[:-1])
    for n, key in enumerate(keys[:-1]):
        got = {k: rows[key][k] for k in _expected(n + 1)}
        assert got == _expected(n + 1), mapping.columns[0].type
        assert type(rows[key]["id"]) is type(key) and rows[key]["id"] == key
    assert {(v.id, int(v._ddbcdc_sequence), v._ddbcdc_deleted) for v in versions} == {
        *((k, SEQ + 10 + n, False) for n, k in enumerate(keys[:-1])),
        (keys[-1], SEQ + 100, True),
    }
    assert logged == 2 * len(keys) + 1


def test_a_key_column_has_no_generated_default(engine: sa.Engine) -> None:
    """An integer key is the item's own: a row without one fails instead of getting a serial."""
    with engine.connect() as conn:
        defaults = conn.execute(
            sa.text(
                "SELECT table_name, column_default FROM information_schema.columns"
                " WHERE column_name = 'id' AND table_name LIKE '%every_bigint'"
            )
        ).all()
    assert sorted(defaults) == [
        ("ddbcdc_changes__every_bigint", None),
        ("ddbcdc_versions__every_bigint", None),
        ("every_bigint", None),
    ]
