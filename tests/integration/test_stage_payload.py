"""A batch's stage rows carry their binary COPY stream, made while the batch is prepared; the
COPY sends that stream as it is, and the stage then holds exactly what writing the rows one
by one on the connection puts there."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from ddbcdc.cleanse import Cleanser
from ddbcdc.decode.record import decode_record
from ddbcdc.materialize import TableWriter
from ddbcdc.materialize.staging import StageRows, binary_payload
from ddbcdc.schema.mapping import load_mappings
from ddbcdc.schema.tables import mapped_tables

CUSTOMERS = load_mappings(Path(__file__).resolve().parents[2] / "schemas" / "tables")[0]


@pytest.fixture(scope="module")
def engine(fresh_database: Callable[..., AbstractContextManager[str]]) -> Iterator[sa.Engine]:
    with fresh_database("t_stage_payload", mappings=(CUSTOMERS,)) as url:
        eng = sa.create_engine(url)
        yield eng
        eng.dispose()


def _record(event: str, userid: int, image: dict[str, Any] | None, us: int) -> bytes:
    body: dict[str, Any] = {
        "ApproximateCreationDateTime": us,
        "Keys": {"userid": {"N": str(userid)}},
    }
    if image is not None:
        body["NewImage"] = {"userid": {"N": str(userid)}, **image}
    return orjson.dumps(
        {
            "eventID": f"e-{userid}-{us}",
            "eventName": event,
            "tableName": "customers",
            "dynamodb": body,
        }
    )


def _changes() -> list[Any]:
    cleanser = Cleanser(CUSTOMERS)
    images: list[tuple[str, dict[str, Any] | None]] = [
        (
            "INSERT",
            {"first_name": {"S": " Zoë "}, "last_name": {"S": "日本"}, "phone": {"N": "42"}},
        ),
        ("MODIFY", {"first_name": {"S": "a\tb\\c\nd"}, "nick": {"S": "kept €"}}),
        ("INSERT", {}),
        ("REMOVE", None),
    ]
    records = [
        _record(event, 10 + i, image, 1_700_000_000_000_000 + i)
        for i, (event, image) in enumerate(images)
    ]
    return [cleanser.cleanse(decode_record(r)) for r in records]


def _staged(engine: sa.Engine, writer: TableWriter, rows: Any) -> list[tuple[Any, ...]]:
    with engine.begin() as conn:
        writer.stage.ensure(conn)
        writer.stage.copy(conn, rows)
        table = writer.stage.table
        return [tuple(r) for r in conn.execute(sa.select(table).order_by(table.c.userid))]


def test_stage_rows_carry_their_binary_copy_and_it_stages_what_the_rows_say(
    engine: sa.Engine,
) -> None:
    writer = TableWriter(mapped_tables((CUSTOMERS,))["customers"])
    rows = writer.stage.rows(_changes())
    assert isinstance(rows, StageRows) and rows.payload is not None
    by_payload = _staged(engine, writer, rows)
    row_by_row = _staged(engine, writer, list(rows))  # no payload: psycopg writes each row
    assert by_payload == row_by_row == sorted(rows)
    assert by_payload[1][1] == "a\tb\\c\nd" and by_payload[0][1:3] == ("Zoë", "日本")
    assert by_payload[3][1:5] == (None, None, None, None)  # a REMOVE stages its key alone


def test_the_payload_is_what_the_copy_sends(engine: sa.Engine) -> None:
    writer = TableWriter(mapped_tables((CUSTOMERS,))["customers"])
    rows = writer.stage.rows(_changes())
    other = [(7, "x", None, None, "{}", 1, Decimal(3), "e7", "INSERT")]
    types = ["int8", "text", "text", "text", "text", "int8", "numeric", "text", "text"]
    assert _staged(engine, writer, StageRows(rows, binary_payload(other, types))) == other


def test_no_payload_for_a_value_without_a_binary_form_of_its_type() -> None:
    assert binary_payload([("not a number",)], ["int8"]) is None
