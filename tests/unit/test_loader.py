"""The load planner (mix, reproducibility, validity), pacing math, backoff and batching rules."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
from botocore.exceptions import ClientError

from ddbcdc.aws.errors import AwsError, aws_error
from ddbcdc.aws.throttle import TokenBucket
from ddbcdc.errors import ConfigurationError
from ddbcdc.load.plan import (
    LoadOptions,
    Operation,
    expected_state,
    format_mix,
    parse_mix,
    plan_operations,
)
from ddbcdc.load.writer import RETRY_BACKOFF, run_load


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("insert=60,modify=30,remove=10", {"insert": 60, "modify": 30, "remove": 10}),
        (" insert = 1 , remove=2 ", {"insert": 1, "modify": 0, "remove": 2}),
        ("modify=5", {"insert": 0, "modify": 5, "remove": 0}),
        ("insert=0,modify=1", {"insert": 0, "modify": 1, "remove": 0}),
    ],
)
def test_parse_mix_accepts(text: str, expected: dict[str, int]) -> None:
    assert parse_mix(text) == expected
    assert parse_mix(format_mix(parse_mix(text))) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not op=weight"),
        ("insert", "not op=weight"),
        ("insert=", "not op=weight"),
        ("=5", "not op=weight"),
        ("upsert=1", "unknown operation 'upsert'"),
        ("insert=-1", "integer >= 0"),
        ("insert=1.5", "integer >= 0"),
        ("insert=\u00b2", "integer >= 0"),
        ("insert=1,insert=2", "given twice"),
        ("insert=0,modify=0,remove=0", "must not all be 0"),
    ],
)
def test_parse_mix_rejects_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_mix(text)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"count": -1},
        {"keys": 0},
        {"rate": -1.0},
        {"workers": 0},
        {"batch_size": 26},
        {"batch_size": 0},
        {"mix": {"insert": 0}},
        {"ttl_attribute": "expires_at"},
        {"ttl_seconds": 60},
        {"ttl_attribute": "userid", "ttl_seconds": 60},
        {"ttl_attribute": "phone", "ttl_seconds": 60},
        {"ttl_attribute": "expires_at", "ttl_seconds": -1},
    ],
)
def test_load_options_are_validated(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        LoadOptions(**kwargs)


def test_same_seed_same_operations_and_different_seed_differs() -> None:
    options = LoadOptions(count=2000, keys=300, seed=42)
    first = list(plan_operations(options))
    assert first == list(plan_operations(LoadOptions(count=2000, keys=300, seed=42)))
    assert first != list(plan_operations(LoadOptions(count=2000, keys=300, seed=43)))
    assert len(first) == 2000
    assert [op.index for op in first] == list(range(2000))


def test_unseeded_options_get_a_fresh_seed_that_replays() -> None:
    a, b = LoadOptions(count=50), LoadOptions(count=50)
    assert a.seed != b.seed
    assert list(plan_operations(a)) == list(plan_operations(LoadOptions(count=50, seed=a.seed)))


def test_mix_proportions_hold_for_large_counts() -> None:
    count = 20_000
    ops = plan_operations(LoadOptions(count=count, keys=10**9, seed=5))
    kinds = Counter(op.kind for op in ops)
    assert abs(kinds["insert"] / count - 0.60) < 0.02
    assert abs(kinds["modify"] / count - 0.30) < 0.02
    assert abs(kinds["remove"] / count - 0.10) < 0.02


def _check_validity(ops: list[Operation], keys: int, present: set[int]) -> None:
    items: dict[int, dict[str, Any]] = {}
    for op in ops:
        if op.kind == "insert":
            assert op.key not in present and 1 <= op.key <= keys
            assert op.item is not None and set(op.item) == {
                "userid",
                "first_name",
                "last_name",
                "phone",
            }
            present.add(op.key)
        elif op.kind == "modify":
            assert op.key in present and op.item is not None and 1 <= len(op.changed) <= 3
            if op.key in items:
                before = items[op.key]
                differing = {a for a in op.item if op.item[a] != before.get(a)}
                assert differing == set(op.changed)
        else:
            assert op.key in present and op.item is None
            present.remove(op.key)
        if op.item is not None:
            assert op.item["userid"] == op.key
            items[op.key] = dict(op.item)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_modifies_and_removes_only_touch_present_keys(seed: int) -> None:
    ops = list(
        plan_operations(
            LoadOptions(count=3000, keys=50, seed=seed, mix={"insert": 3, "modify": 3, "remove": 4})
        )
    )
    _check_validity(ops, 50, set())
    assert Counter(op.kind for op in ops).keys() == {"insert", "modify", "remove"}


def test_full_key_space_turns_inserts_into_modifies() -> None:
    ops = list(plan_operations(LoadOptions(count=100, keys=5, seed=9, mix={"insert": 1})))
    assert [op.kind for op in ops[:5]] == ["insert"] * 5
    assert {op.kind for op in ops[5:]} == {"modify"}
    assert sorted(expected_state(ops)) == [1, 2, 3, 4, 5]


def test_empty_table_turns_removes_into_inserts() -> None:
    ops = list(plan_operations(LoadOptions(count=10, keys=100, seed=1, mix={"remove": 1})))
    assert [op.kind for op in ops] == ["insert", "remove"] * 5
    assert expected_state(ops) == {}


def test_planning_from_existing_items() -> None:
    existing = {7: {"userid": 7, "first_name": "A", "extra": "kept"}, 500: {"userid": 500}}
    options = LoadOptions(count=40, keys=10, seed=4, mix={"modify": 1})
    ops = list(plan_operations(options, existing=existing))
    assert {op.key for op in ops} == {7, 500}
    final = expected_state(ops, initial=existing)
    assert set(final) == {7, 500} and final[7]["extra"] == "kept"
    _check_validity(ops, 10, {7, 500})
    removes = list(
        plan_operations(LoadOptions(count=2, keys=10, seed=4, mix={"remove": 1}), existing=existing)
    )
    assert expected_state(removes, initial=existing) == {}


def test_expected_state_folds_in_order() -> None:
    ops = [
        Operation(0, "insert", 1, {"userid": 1, "first_name": "a"}),
        Operation(1, "insert", 2, {"userid": 2, "first_name": "b"}),
        Operation(2, "modify", 1, {"userid": 1, "first_name": "c"}, ("first_name",)),
        Operation(3, "remove", 2, None),
    ]
    assert expected_state(ops) == {1: {"userid": 1, "first_name": "c"}}


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_token_bucket_waits_in_steps_of_one_over_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(100.0, burst=1.0, clock=clock)
    assert bucket.reserve() == 0.0
    assert bucket.reserve() == pytest.approx(0.01)
    assert bucket.reserve() == pytest.approx(0.02)
    clock.now += 0.03  # the debt is paid and one token is back
    assert bucket.reserve() == 0.0
    clock.now += 10.0  # idle time refills only up to the burst
    assert bucket.reserve() == 0.0
    assert bucket.reserve() == pytest.approx(0.01)


def test_token_bucket_holds_the_long_run_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(250.0, clock=clock)
    start = clock.now
    for _ in range(5000):
        clock.sleep(bucket.reserve() * 1.3)  # sleeps that overshoot by 30%
    assert 5000 / (clock.now - start) == pytest.approx(250.0, rel=0.01)


def test_token_bucket_rate_zero_never_waits() -> None:
    bucket = TokenBucket(0.0, clock=FakeClock())
    assert all(bucket.reserve() == 0.0 for _ in range(1000))


def test_backoff_is_jittered_exponential_and_capped() -> None:
    rng = random.Random(0)
    for attempt in range(12):
        bound = min(5.0, 0.05 * 2**attempt)
        delays = [RETRY_BACKOFF.delay(attempt, rng=rng.random) for _ in range(200)]
        assert all(0.0 <= d <= bound for d in delays)
        assert max(delays) > bound * 0.8  # jitter spreads over the whole range
    assert max(RETRY_BACKOFF.delay(30, rng=rng.random) for _ in range(100)) <= 5.0


def _error(code: str, status: int) -> AwsError:
    """What a client of ddbcdc.aws.client raises for this error of BatchWriteItem."""
    return aws_error(
        ClientError(
            {
                "Error": {"Code": code, "Message": "x"},
                "ResponseMetadata": {"HTTPStatusCode": status},
            },
            "BatchWriteItem",
        ),
        service="DynamoDB",
        operation="BatchWriteItem",
        params={"RequestItems": {"customers": []}},
        endpoint="http://dynamodb",
    )


class ScriptedClient:
    """Stands in for DynamoDB only where moto cannot: it throttles and leaves items unprocessed."""

    def __init__(self, throttles: int, unprocessed_once: bool) -> None:
        self.throttles = throttles
        self.unprocessed_once = unprocessed_once
        self.written: list[tuple[str, int]] = []
        self.batches: list[list[int]] = []

    def batch_write_item(self, RequestItems: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:  # noqa: N803
        if self.throttles:
            self.throttles -= 1
            raise _error("ProvisionedThroughputExceededException", 400)
        ((table, requests),) = RequestItems.items()
        keys = [
            int(next(iter(r.values()))["Item" if "PutRequest" in r else "Key"]["userid"]["N"])
            for r in requests
        ]
        self.batches.append(keys)
        if self.unprocessed_once and len(requests) > 1:
            self.unprocessed_once = False
            done, rest = requests[:1], requests[1:]
        else:
            done, rest = requests, []
        self.written += [(next(iter(r)), k) for r, k in zip(done, keys, strict=False)]
        return {"UnprocessedItems": {table: rest} if rest else {}}


def test_run_load_retries_throttles_and_unprocessed_items_and_keeps_key_order() -> None:
    options = LoadOptions(count=300, keys=20, seed=11, workers=3, batch_size=10)
    ops = list(plan_operations(options))
    client = ScriptedClient(throttles=3, unprocessed_once=True)
    summary = run_load(client, options, operations=ops, sleep=lambda _s: None)
    assert summary.throttles == 3 and summary.unprocessed > 0 and summary.errors == 0
    assert summary.retries == 4
    assert summary.writes == dict(Counter(op.kind for op in ops))
    assert all(len(batch) == len(set(batch)) <= 10 for batch in client.batches)
    for key in {op.key for op in ops}:
        planned = [
            "DeleteRequest" if op.kind == "remove" else "PutRequest" for op in ops if op.key == key
        ]
        assert [kind for kind, k in client.written if k == key] == planned


def test_single_table_model_plans_entities_entity_changes_and_reinserts() -> None:
    options = LoadOptions(count=4000, keys=20, seed=7, model="single-table")
    ops = list(plan_operations(options))
    assert ops == list(
        plan_operations(LoadOptions(count=4000, keys=20, seed=7, model="single-table"))
    )
    kinds = {(op.keys or {}).get("SK", "").split("#")[0] for op in ops}
    assert kinds == {"PROFILE", "ORDER", "LINE"}
    last: dict[int, str | None] = {}
    flips = reinserts = 0
    for op in ops:
        assert op.keys is not None and (op.item is None or op.item["PK"] == op.keys["PK"])
        entity = op.item.get("_et") if op.item is not None else None
        before = last.get(op.key, "absent")
        flips += op.kind == "modify" and {before, entity} == {"order", "cart"}
        reinserts += op.kind == "insert" and before is None
        last[op.key] = entity
    assert flips > 50 and reinserts > 20  # entity changes; delete-then-reinsert
    state = expected_state(ops)
    assert {i["_et"] for i in state.values()} == {"customer", "order", "cart", "line"}
    with pytest.raises(ConfigurationError, match="model"):
        LoadOptions(model="graph")
