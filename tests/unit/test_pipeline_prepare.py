"""Pipeline.prepare (decode and cleanse, no I/O): one record's failure, expected or not, is
that record's dead letter, never the batch's; and the error classification of the database
half (ddbcdc.db) on the errors psycopg raises."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from change_records import record
from ddbcdc.cleanse import CleanChange
from ddbcdc.db import classify, describe
from ddbcdc.decode.record import ChangeRecord
from ddbcdc.pipeline import Pipeline, SourceRecord
from ddbcdc.schema.mapping import load_mappings

MAPPINGS = load_mappings(Path(__file__).resolve().parents[2] / "schemas" / "tables")
US = 1_700_000_000_000_000


class _Exploding:
    """A cleanser that fails the way a bug would, with a value in its message."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.mapping = real.mapping

    def cleanse(self, rec: ChangeRecord) -> CleanChange:
        if rec.event_id == "boom":
            raise RuntimeError("cannot handle 'secret-value'")
        result: CleanChange = self.real.cleanse(rec)
        return result


def test_an_unexpected_error_in_one_record_is_its_dead_letter() -> None:
    engine = sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")  # never used
    pipeline = Pipeline(engine=engine, mappings=MAPPINGS)
    cleansers = pipeline.preparer._cleansers
    cleansers["customers"] = _Exploding(cleansers["customers"])  # type: ignore[assignment]
    records = [
        record("INSERT", {"userid": 1}, US, image={"first_name": "a"}, eid="ok1"),
        record("INSERT", {"userid": 2}, US, image={"first_name": "b"}, eid="boom"),
        record("INSERT", {"userid": 3}, US, image={"first_name": "c"}, eid="ok2"),
    ]
    prepared = pipeline.prepare([SourceRecord(r, "s", str(i)) for i, r in enumerate(records)])
    assert [c.event_id for c in prepared.changes] == ["ok1", "ok2"]
    [(index, letter)] = prepared.poison
    assert index == 1 and letter.stage == "cleanse" and letter.sequence_number == "1"
    assert letter.error == "unexpected RuntimeError during cleanse"
    assert letter.version_us == US and letter.target_table == "customers"
    assert letter.payload == records[1]
    pipeline.close()


def _error(state: str) -> psycopg.Error:
    cls = psycopg.errors.lookup(state)
    return cls("detail quoting a value: 'secret-value'")


@pytest.mark.parametrize(
    ("state", "verdict"),
    [
        ("40001", "conflict"),
        ("40P01", "conflict"),
        ("55P03", "timeout"),
        ("57014", "timeout"),
        ("21000", "poison"),
        ("22021", "poison"),
        ("22P05", "poison"),
        ("23505", "poison"),
        ("23514", "poison"),
        ("54000", "poison"),
        ("P0001", "poison"),
        ("08006", "unavailable"),
        ("53100", "unavailable"),
        ("57P01", "unavailable"),
        ("42P01", "unavailable"),
        ("42501", "unavailable"),
        ("XX000", "unavailable"),
    ],
)
def test_sqlstates_are_classified(state: str, verdict: str) -> None:
    error = _error(state)
    wrapped = sa.exc.DBAPIError("INSERT ... 'secret-value'", {"v": "secret-value"}, error)
    assert classify(error) == classify(wrapped) == verdict
    text = describe(wrapped)
    assert f"SQLSTATE {state}" in text and "secret" not in text


def test_driver_encoding_errors_are_the_value_s_fault() -> None:
    assert classify(UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates")) == "poison"
    assert classify(OverflowError("int too big to convert")) == "poison"
    assert classify(psycopg.OperationalError("connection refused")) == "unavailable"
