"""ddbcdc.local.lineage (the front's shard model) and ddbcdc.aws.streams.lineage_disorder."""

from __future__ import annotations

import pytest

from ddbcdc.aws.streams import ShardInfo, lineage_disorder
from ddbcdc.local.lineage import Lineage, key_hash

ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/customers/stream/2025-11-24T16:00:00.000"


def test_generations_close_where_the_children_begin_and_name_their_parents() -> None:
    lineage = Lineage(ARN, 2, created_ms=1_700_000_000_000)
    first = lineage.current
    children = lineage.roll(10, created_ms=1_700_000_000_000)  # same ms: ids still ordered
    grandchildren = lineage.roll(25, created_ms=1_700_000_100_000, split=True)
    assert (first.start, first.end, children.start, children.end) == (0, 10, 10, 25)
    assert children.parents == first.shard_ids
    assert grandchildren.modulus == 4
    assert grandchildren.parents == [children.shard_ids[i % 2] for i in range(4)]
    assert lineage.children(first.shard_ids[1]) == [children.shard_ids[1]]
    assert sorted(lineage.children(children.shard_ids[0])) == sorted(
        [grandchildren.shard_ids[0], grandchildren.shard_ids[2]]
    )
    # Shard ids as DynamoDB writes them, their creation times in order along the lineage.
    created = [int(s.split("-")[1]) for s in (first.shard_ids[0], children.shard_ids[0])]
    assert created[0] < created[1]
    assert all(len(s.split("-")[1]) == 20 for s in grandchildren.shard_ids)


def test_sequence_numbers_grow_along_every_lineage_and_map_back() -> None:
    lineage = Lineage(ARN, 1, created_ms=0)
    lineage.roll(5, created_ms=1)
    lineage.roll(5, created_ms=2)  # an empty generation
    shards = [
        ShardInfo(
            s["ShardId"],
            (s["ParentShardId"],) if "ParentShardId" in s else (),
            s["SequenceNumberRange"]["StartingSequenceNumber"],
            s["SequenceNumberRange"].get("EndingSequenceNumber"),
        )
        for s in lineage.describe()
    ]
    assert [s.open for s in shards] == [False, False, True]
    assert len(shards[0].starting_sequence or "") >= 21
    assert lineage_disorder(shards) == []
    first, second, third = lineage.generations
    assert first.position(first.sequence(4)) == 4
    assert second.position(first.sequence(4)) is None  # another generation's number
    assert int(third.sequence(5)) > int(second.sequence(5)) > int(first.sequence(4))


def test_lineage_disorder_names_a_child_that_starts_below_its_parent() -> None:
    parent = ShardInfo("p", (), "100", "500")
    good = ShardInfo("c1", ("p",), "501", None)
    bad = ShardInfo("c2", ("p",), "400", None)
    orphan = ShardInfo("c3", ("gone",), "1", None)  # its parent aged out: not judged
    open_parent = ShardInfo("q", (), "100", None)
    under_open = ShardInfo("c4", ("q",), "1", None)
    assert lineage_disorder([parent, good, bad, orphan, open_parent, under_open]) == [(parent, bad)]


def test_key_hash_is_stable_and_order_free() -> None:
    a = key_hash({"userid": {"N": "7"}, "sk": {"S": "x"}})
    assert a == key_hash({"sk": {"S": "x"}, "userid": {"N": "7"}})
    assert a == 0xF0CE236F3E85FFED  # the same in every process and run
    with pytest.raises(ValueError, match="before it began"):
        Lineage(ARN, 1, created_ms=0).roll(-1, created_ms=0)


def test_the_worker_s_watch_reports_each_pair_once_and_keeps_its_count_on_failures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from ddbcdc.worker.lineage import LineageWatch

    answers: list[object] = [
        [ShardInfo("p", (), "100", "500"), ShardInfo("c", ("p",), "400", None)],
        RuntimeError("unreachable"),
        [ShardInfo("p", (), "100", "500"), ShardInfo("c", ("p",), "400", "900")],
        [ShardInfo("p", (), "100", "500"), ShardInfo("c", ("p",), "501", None)],
    ]

    def shards() -> list[ShardInfo]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]

    watch = LineageWatch(shards)
    assert [watch.check() for _ in range(4)] == [1, 1, 1, 0]
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "shard c starts at sequence 400" in errors[0].getMessage()
    (metric,) = watch.collect()
    assert metric.name == "ddbcdc_worker_lineage_disorder"
    assert metric.samples[0].value == 0.0
