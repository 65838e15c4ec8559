"""The compiled cleanse plan agrees with the pydantic row model it stands in for."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ddbcdc.cleanse import CleanChange, Cleanser, version_of
from ddbcdc.decode.record import ChangeRecord
from ddbcdc.errors import CleanseError
from ddbcdc.schema.mapping import TableMapping, load_mappings, parse_mapping
from property_budget import examples

SHIPPED = Path(__file__).resolve().parents[2] / "schemas" / "tables"
CUSTOMERS = load_mappings(SHIPPED)[0]

EVERY_TYPE = parse_mapping(
    {
        "source_table": "every",
        "target_table": "every",
        "key": ["id", "part"],
        "columns": [
            {"name": "id", "type": "bigint"},
            {"name": "part", "type": "text"},
            {"name": "small", "type": "smallint", "default": 3},
            {"name": "mid", "type": "integer", "required": True, "default": "12"},
            {"name": "amount", "type": "numeric"},
            {"name": "flag", "type": "boolean", "default": False},
            {"name": "blob", "type": "bytea"},
            {"name": "doc", "type": "jsonb"},
            {"name": "at", "type": "timestamptz"},
            {"name": "email", "type": "text", "rules": ["trim", "lowercase"], "required": True},
            {"name": "code", "type": "text", "rules": ["uppercase", "digits_only"]},
            {"name": "note", "type": "text", "default": "none"},
        ],
    },
    name="every",
)

_text = st.one_of(
    st.text(alphabet=" \t-+()0123456789abcXYZ\x00é", max_size=8),
    st.sampled_from(
        ["", "  ", "7", " 42 ", "1e3", "2024-01-02T03:04:05", "2024-01-02T03:04:05+02:00"]
    ),
)
_number = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 2**15, 2**31, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1]),
    st.decimals(allow_nan=True, allow_infinity=True, places=None),
    st.sampled_from(
        [Decimal("1E+1"), Decimal("5.0E+3"), Decimal("1.5"), Decimal("-0"), Decimal("1E-7")]
    ),
)
_scalar = st.one_of(
    st.none(), st.booleans(), _number, _text, st.binary(max_size=4), st.floats(width=32)
)
_value = st.one_of(
    _scalar,
    st.lists(_scalar, max_size=3),
    st.dictionaries(st.text(max_size=3), _scalar, max_size=3),
    st.frozensets(st.integers(), max_size=3),
    st.sets(st.text(max_size=3), max_size=3),
)


def _record(
    mapping: TableMapping, event: str, image: dict[str, Any] | None, keys: dict[str, Any]
) -> ChangeRecord:
    return ChangeRecord(
        event_id="e1",
        event_name=event,
        table_name=mapping.source_table,
        aws_region="us-east-1",
        keys=keys,
        new_image=image,
        old_image=None,
        approximate_creation=datetime(2024, 1, 1, tzinfo=UTC),
        approximate_creation_us=1_704_067_200_000_000,
        size_bytes=10,
        is_ttl_delete=False,
        shard_id="shardId-000",
        sequence_number="100",
    )


def _outcome(call: Any) -> tuple[str, Any]:
    """What a cleanse path did: the row with each value's type, or the error it raised."""
    try:
        result = call()
    except CleanseError as exc:
        return "rejected", (str(exc), exc.path)
    except (ArithmeticError, TypeError, ValueError) as exc:  # escapes the model too
        return "raised", type(exc).__name__
    row = result.row if isinstance(result, CleanChange) else result
    key = result.key if isinstance(result, CleanChange) else None
    if row is None:
        return "key", key
    return "row", [(n, type(v).__name__, v) for n, v in row.items()]


def _images(mapping: TableMapping) -> st.SearchStrategy[dict[str, Any]]:
    sources = [c.source for c in mapping.columns]
    return st.dictionaries(st.sampled_from(sources), _value, max_size=len(sources))


@pytest.mark.parametrize("mapping", [CUSTOMERS, EVERY_TYPE], ids=["customers", "every_type"])
@settings(max_examples=examples(400), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_plan_and_model_agree_on_rows(mapping: TableMapping, data: st.DataObject) -> None:
    cleanser = Cleanser(mapping)
    image = data.draw(_images(mapping))
    keys = data.draw(_images(mapping))
    record = _record(mapping, data.draw(st.sampled_from(["INSERT", "MODIFY"])), image, keys)
    fast = _outcome(lambda: cleanser.cleanse(record))
    model = _outcome(lambda: cleanser.validate_row(record))
    assert fast[0] == model[0]
    if fast[0] == "row":
        assert fast[1] == model[1]
    else:
        assert fast == model  # same message and attribute path


@pytest.mark.parametrize("mapping", [CUSTOMERS, EVERY_TYPE], ids=["customers", "every_type"])
@settings(max_examples=examples(300), deadline=None)
@given(data=st.data())
def test_plan_and_model_agree_on_keys(mapping: TableMapping, data: st.DataObject) -> None:
    cleanser = Cleanser(mapping)
    keys = data.draw(_images(mapping))
    record = _record(mapping, "REMOVE", None, keys)
    fast = _outcome(lambda: cleanser.cleanse(record))
    model = _outcome(lambda: cleanser.validate_key(record))
    if model[0] == "row":
        assert fast[0] == "key"
        assert [(type(v).__name__, v) for v in fast[1]] == [(t, v) for _, t, v in model[1]]
    else:
        assert fast == model


def test_plan_keeps_types_exact() -> None:
    cleanser = Cleanser(EVERY_TYPE)
    image = {"id": Decimal("1E+1"), "part": " a ", "amount": 2, "email": " A@B ", "code": 5}
    change = cleanser.cleanse(_record(EVERY_TYPE, "INSERT", image, {}))
    assert change.row == cleanser.validate_row(_record(EVERY_TYPE, "INSERT", image, {}))
    assert change.row is not None
    assert type(change.row["id"]) is int and change.key == (10, " a ")
    assert type(change.row["amount"]) is Decimal and change.row["mid"] == 12
    assert change.row["small"] == 3 and change.row["note"] == "none" and change.row["code"] == "5"


@pytest.mark.parametrize(
    "sequence", ["100", None, "49590338271490256608559692538361571095921575989136588898"]
)
def test_a_change_carries_the_version_of_its_record(sequence: str | None) -> None:
    record = _record(CUSTOMERS, "INSERT", {"userid": 7}, {"userid": 7})
    record = record.model_copy(update={"sequence_number": sequence})
    change = Cleanser(CUSTOMERS).cleanse(record)
    assert (change.version, change.sequence) == version_of(record)
    assert change.key == (7,) and change.approximate_creation_us == record.approximate_creation_us
