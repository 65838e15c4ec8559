"""Delete modes: what each cause of a REMOVE does per mapping, how a record's cause is read,
how a mapping states the modes (and refuses bad ones), and the REMOVE's last image."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from change_records import record
from ddbcdc.backfill.records import RecordMaker
from ddbcdc.cleanse import Cleanser, cause_of
from ddbcdc.decode.record import decode_record
from ddbcdc.errors import CleanseError, ConfigurationError
from ddbcdc.inputs.exports import ExportOptions, incremental_record
from ddbcdc.schema.deletes import DeletePolicy
from ddbcdc.schema.mapping import mapping_differences, mapping_document, parse_mapping


def doc(**modes: str) -> dict[str, Any]:
    return {
        "source_table": "customers",
        "target_table": "customers",
        "key": ["userid"],
        "columns": [
            {"name": "userid", "type": "bigint"},
            {"name": "first_name", "type": "text", "rules": ["trim"]},
            {"name": "phone", "type": "bigint", "required": True},
        ],
        **modes,
    }


@pytest.mark.parametrize(
    ("deletes", "ttl_deletes", "user", "ttl", "unknown"),
    [
        ("hard", "delete", "hard", "hard", "hard"),
        ("hard", "soft", "hard", "soft", "soft"),
        ("hard", "keep", "hard", "keep", "keep"),
        ("soft", "delete", "soft", "soft", "soft"),
        ("soft", "soft", "soft", "soft", "soft"),
        ("soft", "keep", "soft", "keep", "keep"),
    ],
)
def test_each_cause_takes_its_mode(
    deletes: str, ttl_deletes: str, user: str, ttl: str, unknown: str
) -> None:
    policy = parse_mapping(doc(deletes=deletes, ttl_deletes=ttl_deletes), name="c").policy
    assert (policy.mode("user"), policy.mode("ttl"), policy.mode("unknown")) == (
        user,
        ttl,
        unknown,
    )
    assert policy.hard == (user == ttl == "hard")
    assert policy.marks == ("soft" in (user, ttl))
    assert policy.keeps == (ttl == "keep")


@pytest.mark.parametrize(
    ("field", "value"), [("deletes", "keep"), ("deletes", "SOFT"), ("ttl_deletes", "hard")]
)
def test_a_bad_mode_is_refused_naming_the_field(field: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=f"table mapping c: field '{field}'"):
        parse_mapping(doc(**{field: value}), name="c")


def test_the_document_holds_the_modes_only_when_they_are_not_the_defaults() -> None:
    plain = mapping_document(parse_mapping(doc(), name="c"))
    assert "deletes" not in plain and "ttl_deletes" not in plain
    assert plain == mapping_document(parse_mapping(doc(deletes="hard"), name="c"))
    kept = mapping_document(parse_mapping(doc(ttl_deletes="keep"), name="c"))
    assert kept["ttl_deletes"] == "keep" and "deletes" not in kept
    assert mapping_differences(plain, kept) == ["ttl_deletes 'delete' -> 'keep'"]
    assert DeletePolicy.from_document(kept) == DeletePolicy("hard", "keep")


def _decoded(data: bytes) -> Any:
    return decode_record(data, timestamp_unit="us")


def test_the_cause_of_a_remove() -> None:
    key = {"userid": 1}
    assert cause_of(_decoded(record("REMOVE", key, 1, eid="a"))) == "user"
    assert cause_of(_decoded(record("REMOVE", key, 1, eid="a", ttl=True))) == "ttl"
    maker = RecordMaker(parse_mapping(doc(), name="c"), ["userid"])
    marshalled = {"userid": {"N": "1"}}
    repair = maker.remove(marshalled, version_us=1, event_id="verify:run:d", where="verify")
    imported = maker.remove(marshalled, version_us=1, event_id="export:id:0:1", where="x")
    line = {"Metadata": {"WriteTimestampMicros": "1"}, "Keys": marshalled}
    applied = incremental_record(line, ExportOptions(table="customers"))
    for data in (repair.data, imported.data, applied):
        assert cause_of(_decoded(data)) == "unknown", orjson.loads(data)["eventID"]


def test_a_kept_remove_carries_its_last_image_cleansed() -> None:
    old = {"first_name": " Ada ", "phone": 5}
    data = record("REMOVE", {"userid": 1}, 1, eid="a", old_image=old)
    hard = Cleanser(parse_mapping(doc(), name="c")).cleanse(_decoded(data))
    soft = Cleanser(parse_mapping(doc(deletes="soft"), name="c")).cleanse(_decoded(data))
    assert (hard.row, hard.image, hard.cause) == (None, None, "user")
    assert (soft.row, soft.cause) == (None, "user")
    assert soft.image == {"userid": 1, "first_name": "Ada", "phone": 5}
    bad = record("REMOVE", {"userid": 1}, 1, eid="b", old_image={"phone": "x"})
    with pytest.raises(CleanseError) as info:
        Cleanser(parse_mapping(doc(deletes="soft"), name="c")).cleanse(_decoded(bad))
    assert info.value.path == "dynamodb.OldImage.phone"
    Cleanser(parse_mapping(doc(), name="c")).cleanse(_decoded(bad))  # hard: no image needed
