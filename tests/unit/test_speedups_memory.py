"""ddbcdc.decode._speedups keeps no reference to its input and leaks nothing."""

from __future__ import annotations

import base64
import contextlib
import gc
import json
import sys
import tracemalloc
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest

from attribute_strategies import (
    containers,
    nested,
    pure_python,
)
from ddbcdc import DecodeError, decode_record
from ddbcdc.decode import attributes
from ddbcdc.decode.attributes import MAX_DEPTH
from speedup_support import (
    SAMPLE,
    VALID,
    load,
    mutate,
)

# ---------------------------------------------------------------------- references


def _compact(path: Path) -> bytes:
    return orjson.dumps(orjson.loads(path.read_bytes()))


def _broken(name: str, change: Callable[[dict[str, Any]], None]) -> bytes:
    raw = load(name)
    change(raw)
    return orjson.dumps(raw)


_RICH_IMAGE = {
    "d": {"N": "-12.50E+3"},
    "b": {"B": "AAECAw=="},
    "ns": {"NS": ["1", "2.5", "-3E-7"]},
    "l": {
        "L": [{"SS": ["a"]}, {"BS": ["AA=="]}, {"M": {"k": {"BOOL": True}, "z": {"NULL": True}}}]
    },
}


def _image_with(position: int, attribute: Any) -> bytes:
    """A MODIFY whose NewImage has every type and ``attribute`` inserted at ``position``."""
    raw = load("kinesis-modify-ms")
    items = [*raw["dynamodb"]["NewImage"].items(), *_RICH_IMAGE.items()]
    items.insert(position, ("inserted", attribute))
    raw["dynamodb"]["NewImage"] = dict(items)
    return orjson.dumps(raw)


#: Payloads in three groups: built in C, declined by C's unmarshal part-way through a map,
#: and declined by C's build (mostly part-way through, after it built some of the record).
LEAK_PAYLOADS: dict[str, list[bytes]] = {
    "built in C": [
        *(_compact(path) for path in VALID if path.stem.startswith("kinesis")),
        *(line.encode() for line in SAMPLE.read_text().splitlines()[:4]),  # one of them base64
        _image_with(0, {"S": "valid"}),
    ],
    "declined in a map": [
        _image_with(10**6, {"N": "1.2.3"}),  # the last attribute is invalid
        _image_with(2, {"X": "1"}),  # the third has an unknown tag
        _image_with(10**6, {"B": "AB=="}),  # the last is not canonical base64
        _image_with(10**6, {"NS": ["1", "1.0"]}),  # the last holds a duplicate
        _image_with(10**6, nested(MAX_DEPTH + 1, "LM", {"S": "x"})["top"]),  # too deep
        _image_with(10**6, {"SS": ["a", "b", 1]}),
        _image_with(10**6, {"L": [{"N": "1"}, {"N": "1E+126"}]}),
    ],
    "declined by build": [
        *(_compact(path) for path in VALID if path.stem.startswith("streams")),
        _broken("kinesis-modify-ms", mutate("dynamodb.OldImage.phone", {"N": "x"})),
        _broken("kinesis-modify-ms", mutate("eventName", "REMOVE")),
        _broken("kinesis-modify-ms", mutate("eventName", "INSERT")),
        _broken("kinesis-modify-ms", mutate("dynamodb.SequenceNumber", "111")),
        _broken("kinesis-modify-ms", mutate("dynamodb.ApproximateCreationDateTime", 1.5)),
        _broken("kinesis-modify-ms", mutate("dynamodb.Keys.userid", {"N": "x"})),
        _broken("kinesis-modify-ms", mutate("dynamodb.SizeBytes", -1)),
    ],
}


def _text(payload: bytes) -> bytes:
    """The JSON of a payload (the sample holds some records as base64 of their JSON)."""
    return payload if payload.startswith(b"{") else base64.b64decode(payload)


def _reachable(value: Any) -> list[Any]:
    """Every object in a parsed record that could be leaked: all but the singletons."""
    found: list[Any] = []

    def walk(node: Any) -> None:
        if node is None or node is True or node is False:
            return
        if type(node) is int and -5 <= node <= 256:  # cached small ints
            return
        found.append(node)
        if isinstance(node, dict):
            for key, item in node.items():
                walk(key)
                walk(item)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(value)
    return found


def _container_refcounts(value: Any) -> list[int]:
    found = list(containers(value))
    return [sys.getrefcount(c) for c in found]


def _images(raw: dict[str, Any]) -> list[Any]:
    dynamodb = raw["dynamodb"]
    return [dynamodb[key] for key in ("Keys", "NewImage", "OldImage") if key in dynamodb]


def _collect_earlier_garbage() -> None:
    """Collect what earlier tests in this process left to the cycle collector, before the
    counts are taken: its finalizers (an unclosed connection's ResourceWarning) belong to
    those tests, not to this one, which measures only the decoder's references."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def _call_often(speedups: ModuleType, records: list[dict[str, Any]]) -> None:
    for raw in records:
        for _ in range(50):
            speedups.build(raw, 0, "shardId-1", "5")
            for image in _images(raw):
                speedups.unmarshal(image)


@pytest.mark.parametrize("group", LEAK_PAYLOADS)
def test_c_keeps_no_reference_to_its_input_and_returns_new_ones(
    group: str, speedups: ModuleType
) -> None:
    records = [json.loads(_text(payload)) for payload in LEAK_PAYLOADS[group]]
    objects = _reachable(records)
    _collect_earlier_garbage()
    before = [sys.getrefcount(o) for o in objects]
    _call_often(speedups, records)
    gc.collect()
    after = [sys.getrefcount(o) for o in objects]
    leaked = [(o, a - b) for o, a, b in zip(objects, after, before, strict=True) if a != b]
    assert not leaked, f"references kept to parts of the input: {leaked[:5]}"
    # What C returns holds exactly the references Python's own answer holds.
    for raw in records:
        fields = speedups.build(raw, 0, "shardId-1", "5")
        if fields is not None:
            assert sys.getrefcount(fields) == 2
            with pure_python():
                record = decode_record(raw, shard_id="shardId-1", sequence_number="5")
            python_fields = dict(record.__dict__)
            del record
            assert _container_refcounts(fields) == _container_refcounts(python_fields)
            for name in ("approximate_creation", "approximate_creation_us"):
                assert sys.getrefcount(fields[name]) == sys.getrefcount(python_fields[name])
        for image in _images(raw):
            fast = speedups.unmarshal(image)
            if fast is not None:
                with pure_python():
                    slow = attributes.unmarshal(image)
                assert _container_refcounts(fast) == _container_refcounts(slow)


# -------------------------------------------------------------------------- memory

#: Rounds of calls per payload of a group.
ROUNDS = 500
#: What the calls may leave behind (0 to 32 bytes seen). One object leaked per round of one
#: payload alone, even the smallest (an int: 28 bytes, 32 with the allocator's rounding),
#: would be 16 KB, four times over this; per round of every payload, 4 KB times their number.
LEAK_BOUND = 4 * 1024


def call_many(speedups: ModuleType, payloads: list[bytes], count: int) -> None:
    """``count`` times: one decode_record of a payload, and C's build and unmarshal of it
    (each on objects parsed afresh, so that a reference kept to them keeps them all)."""
    texts = [_text(payload) for payload in payloads]
    for index in range(count):
        with contextlib.suppress(DecodeError):
            decode_record(payloads[index % len(payloads)])
        raw = orjson.loads(texts[index % len(texts)])
        speedups.build(raw, 0, None, None)
        dynamodb = raw["dynamodb"]
        speedups.unmarshal(dynamodb.get("NewImage") or dynamodb.get("OldImage"))


def traced_growth(speedups: ModuleType, payloads: list[bytes], count: int) -> int:
    """Bytes still allocated after ``count`` rounds of calls, over a warmed-up baseline."""
    _collect_earlier_garbage()
    tracemalloc.start()
    try:
        call_many(speedups, payloads, 2 * len(payloads))
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        call_many(speedups, payloads, count)
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("group", LEAK_PAYLOADS)
def test_decoding_does_not_leak_memory(group: str, speedups: ModuleType) -> None:
    payloads = LEAK_PAYLOADS[group]
    for payload in payloads:  # each group takes the path it is meant to
        raw = orjson.loads(_text(payload))
        assert (speedups.build(raw, 0, None, None) is not None) == (group == "built in C")
        image = raw["dynamodb"].get("NewImage") or raw["dynamodb"].get("OldImage")
        declined = speedups.unmarshal(image) is None
        assert declined == (group == "declined in a map")
    rounds = ROUNDS * len(payloads)
    grown = traced_growth(speedups, payloads, rounds)
    assert grown < LEAK_BOUND, f"{grown} bytes more after {rounds} rounds"
