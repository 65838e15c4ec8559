"""TTL expiry kept as an archive, the whole path: loader -> DynamoDB (moto) with Time to Live
-> the local stack's sweeper expires items, their REMOVEs stamped with the TTL service's
identity -> bridge -> Kinesis -> the real ``ddbcdc worker`` -> PostgreSQL.

The customers mapping with ``"ttl_deletes": "keep"``: the loader writes every item with an
``expires_at`` a few seconds ahead and removes some itself. When DynamoDB has expired them
all, PostgreSQL holds each expired item as it last was (its tombstone in the versions table,
``ttl`` as the cause in the change log), none of the items users removed, and no live row,
so the copy still equals the table. An item written again is live again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
import sqlalchemy as sa
from cluster import MAPPINGS_DIR, Worker, query, wait_for, worker_env

from ddbcdc.aws import clients as aws
from ddbcdc.aws.provision import ProvisionOptions, set_up
from ddbcdc.load.plan import LoadOptions, expected_state, plan_operations
from ddbcdc.load.writer import run_load
from ddbcdc.local.stack import LocalStack
from ddbcdc.schema.mapping import TableMapping, load_mappings
from ddbcdc.verify.compare import compare

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STREAM = "ddbcdc-archive"


@pytest.fixture
def archive(tmp_path: Path) -> TableMapping:
    """The shipped customers mapping, keeping what the TTL expires."""
    doc = json.loads((MAPPINGS_DIR / "customers.json").read_text())
    doc["ttl_deletes"] = "keep"
    folder = tmp_path / "mappings"
    folder.mkdir()
    (folder / "customers.json").write_text(json.dumps(doc))
    (mapping,) = load_mappings(folder)
    return mapping


@pytest.fixture
def archive_db(
    fresh_database: Callable[..., AbstractContextManager[str]], archive: TableMapping
) -> Iterator[str]:
    with fresh_database("t_archive", mappings=(archive,)) as url:
        yield url


def test_expired_items_are_archived_and_user_removes_are_not(
    stack: LocalStack, archive: TableMapping, archive_db: str, tmp_path: Path
) -> None:
    settings = stack.settings()
    dynamodb = aws.client("dynamodb", settings)
    set_up(
        dynamodb,
        aws.client("kinesis", settings),
        ProvisionOptions(
            table="customers", stream=STREAM, shards=2, local=True, ttl_attribute="expires_at"
        ),
    )
    assert archive.path is not None
    env = worker_env(stack, archive_db, STREAM, DDBCDC_MAPPINGS_DIR=str(archive.path.parent))
    worker = Worker(env, tmp_path / "worker.log")
    try:
        options = LoadOptions(
            table="customers",
            count=300,
            keys=200,
            seed=5,
            mix={"insert": 50, "modify": 35, "remove": 15},
            ttl_attribute="expires_at",
            ttl_seconds=4,
        )
        ops = list(plan_operations(options))
        client = aws.client("dynamodb", settings, max_attempts=1)
        assert run_load(client, options, operations=ops).errors == 0
        last = expected_state(ops)
        removed = {op.key for op in ops} - last.keys()
        assert len(last) > 20 and removed

        def expired() -> bool:
            return not dynamodb.scan(TableName="customers", ConsistentRead=True)["Items"]

        wait_for("DynamoDB to expire every item", expired, 60, worker)
        engine = sa.create_engine(archive_db)

        def archived() -> bool:
            ttl = "SELECT count(*) FROM ddbcdc_changes__customers WHERE _ddbcdc_removed_by = 'ttl'"
            return int(query(archive_db, ttl)[0][0]) == len(last)

        wait_for("the worker to apply every expiry", archived, 240, worker)
        rows = {
            r.userid: (r.first_name, r.last_name, r.phone, r.expires)
            for r in query(
                archive_db,
                "SELECT userid, first_name, last_name, phone, "
                "attributes ? 'expires_at' AS expires FROM customers",
            )
        }
        assert rows == {
            k: (v["first_name"], v["last_name"], str(v["phone"]), True) for k, v in last.items()
        }
        tombstones = query(
            archive_db, "SELECT count(*) FROM ddbcdc_versions__customers WHERE _ddbcdc_deleted"
        )
        assert tombstones[0][0] == len(last) + len(removed)
        causes = query(
            archive_db,
            "SELECT _ddbcdc_removed_by, count(*) FROM ddbcdc_changes__customers "
            "WHERE _ddbcdc_op = 'REMOVE' GROUP BY 1",
        )
        assert dict(causes)["user"] >= len(removed)
        comparison = compare(dynamodb, engine, archive)
        assert comparison.matches and comparison.target_rows == 0  # no live item, none kept live

        again = next(iter(last))
        dynamodb.put_item(
            TableName="customers",
            Item={"userid": {"N": str(again)}, "first_name": {"S": "Again"}},
        )
        wait_for(
            "the item written again to be live",
            lambda: compare(dynamodb, engine, archive).matches,
            120,
            worker,
        )
        engine.dispose()
    finally:
        assert worker.stop() == 0, worker.log_tail()
