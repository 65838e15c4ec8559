"""The pure half of the local bridge: format, partition keys, order-safe batches."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ddbcdc.local.bridge_format import (
    Entry,
    approximate_creation_us,
    next_batch,
    partition_key,
    stream_name_from_arn,
    to_kinesis_record,
)


def test_stream_name_from_arn() -> None:
    arn = "arn:aws:kinesis:us-east-1:000000000000:stream/customers-cdc"
    assert stream_name_from_arn(arn) == ("us-east-1", "customers-cdc")


def test_partition_key_is_stable_and_order_free() -> None:
    a = partition_key({"pk": {"S": "x"}, "sk": {"N": "1"}})
    assert a == partition_key({"sk": {"N": "1"}, "pk": {"S": "x"}})
    assert a != partition_key({"pk": {"S": "x"}, "sk": {"N": "2"}})
    assert len(a) == 32


def test_timestamp_is_the_millisecond_in_microseconds() -> None:
    assert approximate_creation_us(1795789903.109) == 1795789903109000
    assert approximate_creation_us(1795789903) == 1795789903000000


def test_remove_record_format() -> None:
    record = {
        "eventID": "e1",
        "eventName": "REMOVE",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": 1700000000.5,
            "Keys": {"id": {"N": "1"}},
            "OldImage": {"id": {"N": "1"}},
            "SizeBytes": 12,
            "SequenceNumber": "100",
        },
    }
    assert to_kinesis_record(record, table_name="t") == {
        "awsRegion": "us-east-1",
        "eventID": "e1",
        "eventName": "REMOVE",
        "userIdentity": None,
        "recordFormat": "application/json",
        "tableName": "t",
        "dynamodb": {
            "ApproximateCreationDateTime": 1700000000500000,
            "Keys": {"id": {"N": "1"}},
            "OldImage": {"id": {"N": "1"}},
            "SizeBytes": 12,
        },
        "eventSource": "aws:dynamodb",
    }


@given(st.lists(st.sampled_from("abcde"), max_size=60), st.sets(st.integers(0, 59)))
def test_batches_never_reorder_a_key(keys: list[str], failing: set[int]) -> None:
    """Sending batches, with some entries failing once, keeps every key's order."""
    pending = [Entry(k, str(i).encode()) for i, k in enumerate(keys)]
    sent: list[Entry] = []
    failed_once: set[bytes] = set()
    while pending:
        batch, later = next_batch(pending)
        assert batch, "progress"
        assert len({pending[i].partition_key for i in batch}) == len(batch)
        failed = []
        for i in batch:
            index = int(pending[i].data)
            if index in failing and pending[i].data not in failed_once:
                failed_once.add(pending[i].data)
                failed.append(i)
            else:
                sent.append(pending[i])
        pending = [pending[i] for i in sorted(failed + later)]
    for key in set(keys):
        order = [int(e.data) for e in sent if e.partition_key == key]
        assert order == sorted(order)
    assert len(sent) == len(keys)
