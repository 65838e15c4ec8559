"""Kept columns through PostgreSQL: any item -> live row and change log -> the same item."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings

from attribute_strategies import ITEMS, no_nul_names
from change_records import record
from ddbcdc.decode.attributes import marshal, unmarshal
from ddbcdc.decode.itemjson import comparable, decode_attributes
from ddbcdc.pipeline import Pipeline, SourceRecord
from ddbcdc.schema.mapping import parse_mapping

MAPPING = parse_mapping(
    {
        "source_table": "things",
        "target_table": "things",
        "key": ["pk"],
        "change_log": True,
        "extra": {"column": "rest", "item_column": "item"},
        "columns": [{"name": "pk", "type": "bigint"}, {"name": "label", "type": "text"}],
    },
    name="things",
)
KEYS = itertools.count(1)


@pytest.fixture(scope="module")
def pipeline(fresh_database: Callable[..., AbstractContextManager[str]]) -> Iterator[Pipeline]:
    with fresh_database("t_kept", mappings=(MAPPING,)) as url:
        engine = sa.create_engine(url)
        yield Pipeline(engine=engine, mappings=[MAPPING])
        engine.dispose()


def stored(pipeline: Pipeline, pk: int) -> tuple[Any, ...]:
    query = sa.text(
        "SELECT t.label, t.rest::text, t.item::text, "
        "(c._ddbcdc_row->'rest')::text, (c._ddbcdc_row->'item')::text "
        "FROM things t JOIN ddbcdc_changes__things c USING (pk) WHERE pk = :pk"
    )
    with pipeline.engine.connect() as conn:
        label, rest, item, log_rest, log_item = conn.execute(query, {"pk": pk}).one()
    return label, rest, item, (log_rest, log_item)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ITEMS.filter(no_nul_names))
def test_any_item_comes_back_from_its_row(pipeline: Pipeline, item: dict[str, Any]) -> None:
    pk = next(KEYS)
    image = {**item, "pk": pk, "label": "x"}
    data = record("INSERT", {"pk": pk}, 1, image=image, eid=uuid.uuid4().hex, table="things")
    result = pipeline.process([SourceRecord(data)])
    assert result.upserted == 1, result
    label, rest, whole, logged = stored(pipeline, pk)
    # The row, back to a DynamoDB item: the mapped columns plus the unmapped attributes.
    back = {"pk": pk, "label": label, **decode_attributes(rest)}
    assert comparable(unmarshal(marshal(back))) == comparable(image)
    assert comparable(decode_attributes(whole)) == comparable(image)
    # The change log's row holds the same kept columns.
    log_rest, log_item = logged
    assert comparable(decode_attributes(log_rest)) == comparable(decode_attributes(rest))
    assert comparable(decode_attributes(log_item)) == comparable(image)


def test_edge_numbers_keep_their_value_through_jsonb(pipeline: Pipeline) -> None:
    pk = next(KEYS)
    numbers = {
        "big": 10**37 - 1,
        "neg": -(10**37 - 1),
        "tiny": Decimal("1E-130"),
        "huge": Decimal("9.9999999999999999999999999999999999999E+125"),
        "sci": Decimal("1.10E+5"),
        "zeros": Decimal("123.4500"),
        "set": {Decimal("0.1"), 7, Decimal("-2E+3")},
    }
    image = {"pk": pk, **numbers}
    data = record("INSERT", {"pk": pk}, 1, image=image, eid=uuid.uuid4().hex, table="things")
    assert pipeline.process([SourceRecord(data)]).upserted
    _, rest, _, _ = stored(pipeline, pk)
    back = decode_attributes(rest)
    assert comparable(back) == comparable(numbers)
    assert marshal(back)["huge"] == {"N": "9" * 38 + "0" * 88}  # PostgreSQL's plain notation
