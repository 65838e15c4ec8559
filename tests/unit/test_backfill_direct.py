"""An export line's change made straight from its item (ddbcdc.backfill.direct) is exactly the
change its synthesized record gives when decoded and cleansed, or none at all: then the
record decides, and a line the record makes a dead letter is the same dead letter."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import orjson
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from attribute_strategies import ATTRIBUTE_VALUES
from ddbcdc.backfill.direct import DeferredRecords, DirectInserts
from ddbcdc.backfill.importer import line_change, line_record
from ddbcdc.backfill.records import RecordMaker
from ddbcdc.decode.attributes import marshal
from ddbcdc.pipeline import Pipeline, PreparedBatch, SourceRecord
from ddbcdc.schema.mapping import load_mappings
from shop_records import image, shop_mapping

MAPPINGS = load_mappings(Path(__file__).resolve().parents[2] / "schemas" / "tables")
US = 1_796_039_995_000_000
KEYS = ["userid"]


def _pipeline(unit: Literal["auto", "s", "ms", "us"]) -> Pipeline:
    engine = sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")  # never used
    return Pipeline(engine=engine, mappings=MAPPINGS, timestamp_unit=unit)


def _both(
    pipeline: Pipeline, lines: list[bytes], version_us: int
) -> tuple[PreparedBatch, PreparedBatch, list[Any]]:
    """The batch of ``lines`` prepared the reference way and with the direct changes."""
    maker, direct = RecordMaker(MAPPINGS[0], KEYS), DirectInserts(pipeline, MAPPINGS[0], KEYS)
    ids = [f"export:01764000000123-abc:0:{n}" for n in range(len(lines))]

    def record(n: int) -> SourceRecord:
        return line_record(
            lines[n], maker=maker, version_us=version_us, event_id=ids[n], where=f"f:{n + 1}"
        )

    changes = [
        line_change(line, direct=direct, version_us=version_us, event_id=ids[n])
        for n, line in enumerate(lines)
    ]
    reference = pipeline.prepare([record(n) for n in range(len(lines))])
    fast = pipeline.prepare(DeferredRecords(len(lines), record), cleansed=changes)
    return reference, fast, changes


def _same(reference: PreparedBatch, fast: PreparedBatch) -> None:
    def by_index(batch: PreparedBatch) -> dict[int, Any]:
        return {batch.sources[id(c)]: c for c in batch.changes}

    assert by_index(fast) == by_index(reference)
    assert sorted(fast.poison, key=lambda p: p[0]) == reference.poison
    assert [bytes(fast.records[i].data) for i in range(len(fast.records))] == [
        bytes(r.data) for r in reference.records
    ]


def _line(item: dict[str, Any]) -> bytes:
    return b'{"Item":' + orjson.dumps(item) + b"}"


def test_a_customers_line_takes_the_direct_way_and_equals_its_record() -> None:
    pipeline = _pipeline("us")
    lines = [
        _line({"userid": {"N": "7"}, "first_name": {"S": " Ann "}, "phone": {"N": "5551234"}}),
        _line({"userid": {"N": "8"}, "last_name": {"S": "Lee"}, "nick": {"SS": ["a", "b"]}}),
        b'{"Item":{"userid":{"N":"9"}},"Other":1}',
    ]
    reference, fast, changes = _both(pipeline, lines, US)
    assert all(change is not None for change in changes)
    assert changes[0] is not None and changes[0].row == {
        "userid": 7,
        "first_name": "Ann",
        "last_name": None,
        "phone": "5551234",
        "attributes": "{}",
    }
    _same(reference, fast)
    pipeline.close()


def test_lines_the_direct_way_leaves_are_the_records_dead_letters() -> None:
    pipeline = _pipeline("us")
    lines = [
        _line({"userid": {"S": "not a number"}}),  # the mapping cannot hold it
        _line({"first_name": {"S": "no key"}}),
        b"not json",
        b'{"Nope":{}}',
        _line({"userid": {"N": "1"}, "first_name": {"N": "12"}}),  # fits: the int's text
    ]
    reference, fast, changes = _both(pipeline, lines, US)
    assert changes[:4] == [None] * 4 and changes[4] is not None
    assert changes[4].row is not None and changes[4].row["first_name"] == "12"
    assert [i for i, _ in reference.poison] == [0, 1, 2, 3]
    _same(reference, fast)
    pipeline.close()


def test_a_version_the_pipeline_would_read_otherwise_goes_the_reference_way() -> None:
    pipeline = _pipeline("auto")  # 1.7e9 reads as seconds under "auto"
    lines = [_line({"userid": {"N": "1"}})]
    reference, fast, changes = _both(pipeline, lines, 1_700_000_000)
    assert changes == [None]
    _same(reference, fast)
    pipeline.close()


_NAMES = st.sampled_from(["userid", "first_name", "last_name", "phone", "x", "y"])
_CUSTOMERS_VALUES = st.one_of(
    st.builds(lambda n: {"N": str(n)}, st.integers(-(2**64), 2**64)),
    st.builds(lambda s: {"S": s}, st.text(max_size=6)),
    ATTRIBUTE_VALUES,
)
_ITEMS = st.dictionaries(_NAMES, _CUSTOMERS_VALUES, max_size=6)


@pytest.mark.parametrize("unit", ["us", "auto"])
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(_ITEMS, min_size=1, max_size=6))
def test_any_item_gives_the_change_or_dead_letter_its_record_gives(
    unit: Literal["auto", "us"], items: list[dict[str, Any]]
) -> None:
    try:
        lines = [_line(item) for item in items]
    except TypeError:  # a value JSON cannot carry: no export line holds it
        assume(False)
    pipeline = _pipeline(unit)
    reference, fast, _ = _both(pipeline, lines, US)
    _same(reference, fast)
    pipeline.close()


_BOTO3_VALUES = st.one_of(
    _CUSTOMERS_VALUES,
    st.builds(lambda b: {"B": b}, st.binary(max_size=4)),
    st.builds(lambda bs: {"BS": bs}, st.lists(st.binary(max_size=3), max_size=3)),
    st.builds(lambda b: {"L": [{"B": b}, {"M": {"b": {"B": b}}}]}, st.binary(max_size=3)),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(st.dictionaries(_NAMES, _BOTO3_VALUES, max_size=6), min_size=1, max_size=6))
def test_a_scanned_item_gives_the_change_or_dead_letter_its_record_gives(
    items: list[dict[str, Any]],
) -> None:
    """A Scan page's items, as boto3 returns them (B values as bytes)."""
    pipeline = _pipeline("us")
    maker, direct = RecordMaker(MAPPINGS[0], KEYS), DirectInserts(pipeline, MAPPINGS[0], KEYS)

    def record(n: int) -> SourceRecord:
        return maker.put(items[n], version_us=US, event_id=f"snapshot:r:{n}", where="seg 0")

    try:
        records = [record(n) for n in range(len(items))]
    except TypeError:  # a value JSON cannot carry: no page holds it
        assume(False)
    changes = [
        direct.change(item, version_us=US, event_id=f"snapshot:r:{n}")
        for n, item in enumerate(items)
    ]
    _same(
        pipeline.prepare(records),
        pipeline.prepare(DeferredRecords(len(items), record), cleansed=changes),
    )
    pipeline.close()


def test_a_routed_mappings_lines_take_the_reference_way_with_the_same_changes() -> None:
    """A routed mapping's cleanser picks the route from the record: the direct way leaves
    every line to it, and the batch is the reference one (routes and route keys included)."""
    shop = shop_mapping()
    engine = sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")  # never used
    pipeline = Pipeline(engine=engine, mappings=[shop], timestamp_unit="us")
    keys = ["PK", "SK"]
    maker, direct = RecordMaker(shop, keys), DirectInserts(pipeline, shop, keys)
    items = [
        image(("CUSTOMER#1", "PROFILE"), "customer", "ada"),
        image(("CUSTOMER#1", "ORDER#2024-05-01#9"), "order", "open"),
        image(("CUSTOMER#1", "ORDER#2024-05-01#9"), "cart", "open"),
    ]
    lines = [orjson.dumps({"Item": marshal(item)}) for item in items]
    ids = [f"export:01764000000123-abc:0:{n}" for n in range(len(lines))]

    def record(n: int) -> SourceRecord:
        return line_record(lines[n], maker=maker, version_us=US, event_id=ids[n], where="f:1")

    changes = [
        line_change(line, direct=direct, version_us=US, event_id=ids[n])
        for n, line in enumerate(lines)
    ]
    assert changes == [None, None, None]
    reference = pipeline.prepare([record(n) for n in range(len(lines))])
    fast = pipeline.prepare(DeferredRecords(len(lines), record), cleansed=changes)
    _same(reference, fast)
    routes = [c.route for c in fast.changes]
    assert routes == ["shop_customers", "shop_orders", "shop_unmatched"]
