"""JSON documents read incrementally: the same records whatever the chunking, flat memory."""

from __future__ import annotations

import io
import json
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from ddbcdc.inputs import InputReader
from ddbcdc.inputs.documents import JsonText, documents
from ddbcdc.pipeline import SourceRecord
from property_budget import examples

TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)


def change(userid: int, name: str) -> dict[str, Any]:
    return {
        "eventID": f"id-{userid}",
        "eventName": "INSERT",
        "tableName": "customers",
        "dynamodb": {
            "ApproximateCreationDateTime": 1_714_521_600_000_000 + userid,
            "Keys": {"userid": {"N": str(userid)}},
            "NewImage": {"userid": {"N": str(userid)}, "first_name": {"S": name}},
        },
    }


def records_of(data: bytes, chunk: int) -> list[tuple[int | str, bytes]]:
    reader = InputReader(io.BytesIO(data), chunk=chunk)
    found = []
    for where, record in reader.located():
        assert isinstance(record, SourceRecord), record
        found.append((where, record.data))
    return found


@settings(max_examples=examples(60))
@given(
    names=st.lists(TEXT, min_size=1, max_size=6),
    indent=st.sampled_from([None, 1, 2, 4]),
    container=st.sampled_from(["array", "lambda", "get-records-sorted"]),
    chunk=st.integers(min_value=1, max_value=300),
)
def test_the_same_records_whatever_the_chunk_size(
    names: list[str], indent: int | None, container: str, chunk: int
) -> None:
    records = [change(i, name) for i, name in enumerate(names)]
    if container == "array":
        document: Any = records
    elif container == "lambda":
        document = {"Records": records}
    else:  # jq -S puts Records after the other members
        document = {"MillisBehindLatest": 0, "NextShardIterator": "x" * 50, "Records": records}
    data = json.dumps(document, indent=indent, ensure_ascii=False).encode()
    found = records_of(data, chunk)
    assert found == records_of(data, 1 << 20)
    assert [orjson.loads(raw) for _, raw in found] == records


@settings(max_examples=examples(30))
@given(names=st.lists(TEXT, min_size=1, max_size=4), chunk=st.integers(1, 64))
def test_several_pretty_documents_whatever_the_chunk_size(names: list[str], chunk: int) -> None:
    data = b"\n".join(
        json.dumps(change(i, name), indent=2, ensure_ascii=False).encode()
        for i, name in enumerate(names)
    )
    found = records_of(data, chunk)
    assert [orjson.loads(raw) for _, raw in found] == [change(i, n) for i, n in enumerate(names)]
    assert found[0][0] == "the record at line 1"


class Watched(io.RawIOBase):
    """An endless-looking array of records, generated as it is read."""

    def __init__(self, count: int) -> None:
        records = (b",\n" * (i > 0) + orjson.dumps(change(i, "n" * 20)) for i in range(count))
        self._parts = iter([b"[\n", *records, b"\n]\n"])
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while len(self._pending) < len(buffer):
            part = next(self._parts, None)
            if part is None:
                break
            self._pending += part
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count


def largest_buffer(count: int, chunk: int) -> tuple[int, int]:
    text = JsonText(io.BufferedReader(Watched(count)), chunk=chunk)
    largest = seen = 0
    for _ in documents(text):
        seen += 1
        largest = max(largest, len(text.text))
    return seen, largest


def test_memory_stays_flat_however_many_records() -> None:
    chunk = 4096
    seen_small, small = largest_buffer(2_000, chunk)
    seen_large, large = largest_buffer(40_000, chunk)
    assert (seen_small, seen_large) == (2_000, 40_000)
    record = len(orjson.dumps(change(40_000, "n" * 20)))
    # the text held is bounded by the chunk size and one record, not the input's length
    assert large <= 3 * chunk + 2 * record
    assert large <= small + 2 * record
