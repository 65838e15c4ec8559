"""The backfill preconditions on a DynamoDB stream: the table's stream, and a clock-skew margin
that covers the stream's whole seconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from ddbcdc.backfill.preconditions import _clock, _table_stream

ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/customers/stream/2025-11-24T16:00:00.000"
SECOND = 1_000_000


def table(**values: object) -> dict[str, object]:
    base: dict[str, object] = {
        "TableName": "customers",
        "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        "LatestStreamArn": ARN,
    }
    return {**base, **values}


def test_the_table_s_stream_must_be_on_new_and_old_images_and_the_one_read() -> None:
    assert _table_stream(table(), ARN).level == "ok"
    off = _table_stream(table(StreamSpecification={"StreamEnabled": False}), ARN)
    assert off.level == "fail" and "no DynamoDB stream enabled" in off.message
    keys = _table_stream(
        table(StreamSpecification={"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"}), ARN
    )
    assert keys.level == "fail" and "KEYS_ONLY, not NEW_AND_OLD_IMAGES" in keys.message
    newer = ARN.replace("16:00", "17:00")
    moved = _table_stream(table(LatestStreamArn=newer), ARN)
    assert moved.level == "fail" and f"is now {newer}" in moved.message


def response(offset: timedelta) -> dict[str, object]:
    date = format_datetime(datetime.now(UTC) + offset, usegmt=True)
    return {"ResponseMetadata": {"HTTPHeaders": {"date": date}}}


def test_the_margin_must_cover_the_clocks_and_the_stream_s_second() -> None:
    in_sync = response(timedelta(0))
    # Two seconds of margin: enough at microsecond precision, not with whole seconds.
    assert _clock(in_sync, 2 * SECOND, granularity_us=1).level == "ok"
    rounded = _clock(in_sync, 2 * SECOND, granularity_us=SECOND)
    assert rounded.level == "fail" and "1s for the stream's whole seconds" in rounded.message
    assert _clock(in_sync, 5 * SECOND, granularity_us=SECOND).level == "ok"
    assert _clock(response(timedelta(seconds=4)), 5 * SECOND, granularity_us=SECOND).level == "fail"
