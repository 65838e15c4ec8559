"""The loader against a real moto DynamoDB server: the table ends as the plan says."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ddbcdc.aws import clients as aws
from ddbcdc.aws.errors import AwsNotFoundError
from ddbcdc.load.plan import LoadOptions, expected_state, plan_operations
from ddbcdc.load.writer import run_load, scan_items
from ddbcdc.settings import Settings

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def loader_moto_url() -> Iterator[str]:
    """A moto server of this module's own on a free 127.0.0.1 port."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"moto server did not start on {url}") from None
            time.sleep(0.05)
    yield url
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def dynamodb(loader_moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None, dynamodb_endpoint=loader_moto_url, aws_region="us-east-1")
    return aws.client("dynamodb", settings, max_attempts=1)


def _new_table(client: Any) -> str:
    name = f"customers-{uuid.uuid4().hex[:8]}"
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "userid", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "userid", "AttributeType": "N"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return name


def test_load_leaves_the_planned_final_state(dynamodb: Any) -> None:
    table = _new_table(dynamodb)
    options = LoadOptions(
        table=table,
        count=600,
        keys=80,
        seed=7,
        workers=4,
        mix={"insert": 50, "modify": 35, "remove": 15},
    )
    ops = list(plan_operations(options))
    summary = run_load(dynamodb, options, operations=ops)
    assert summary.errors == 0 and summary.total_writes == 600
    assert summary.writes == dict(Counter(op.kind for op in ops))
    assert summary.batches < 600  # batched, not one call per write
    expected = expected_state(ops)
    assert scan_items(dynamodb, table) == expected
    assert 0 < len(expected) <= 80
    print(f"\nloader against moto: {summary.rate:,.0f} writes/s ({summary.to_dict()})")


def test_updates_and_a_scan_first_continuation(dynamodb: Any) -> None:
    table = _new_table(dynamodb)
    first = LoadOptions(table=table, count=150, keys=40, seed=1, modify_with_update=True)
    ops = list(plan_operations(first))
    assert run_load(dynamodb, first, operations=ops).errors == 0
    existing = scan_items(dynamodb, table)
    assert existing == expected_state(ops)
    more = LoadOptions(table=table, count=45, keys=40, seed=2, mix={"modify": 2, "remove": 1})
    ops2 = list(plan_operations(more, existing=existing))
    assert len(existing) > 15  # so no remove empties the table and turns into an insert
    assert {op.key for op in ops2} <= set(existing)
    assert run_load(dynamodb, more, operations=ops2).errors == 0
    assert scan_items(dynamodb, table) == expected_state(ops2, initial=existing)


def test_rate_is_steady(dynamodb: Any) -> None:
    table = _new_table(dynamodb)
    options = LoadOptions(table=table, count=90, keys=1000, seed=3, rate=150.0)
    summary = run_load(dynamodb, options)
    assert summary.total_writes == 90
    assert 0.5 <= summary.elapsed_s <= 3.0  # 90 writes at 150/s is 0.6 s (minus a small burst)


def test_a_missing_table_is_a_clear_error(dynamodb: Any) -> None:
    with pytest.raises(AwsNotFoundError, match="BatchWriteItem on table no-such-table"):
        run_load(dynamodb, LoadOptions(table="no-such-table", count=10, seed=1))


def _cli(args: list[str], url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **CREDENTIALS, "AWS_REGION": "us-east-1", "DDBCDC_DYNAMODB_ENDPOINT": url}
    return subprocess.run(
        [sys.executable, "-m", "ddbcdc.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_same_seed_same_table(dynamodb: Any, loader_moto_url: str, tmp_path: Path) -> None:
    tables = [_new_table(dynamodb), _new_table(dynamodb)]
    for table in tables:
        done = _cli(
            [
                "load",
                "--table",
                table,
                "--count",
                "250",
                "--keys",
                "50",
                "--seed",
                "99",
                "--mix",
                "insert=5,modify=4,remove=2",
                "--json",
            ],
            loader_moto_url,
            tmp_path,
        )
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        assert summary["total_writes"] == 250 and summary["errors"] == 0 and summary["seed"] == 99
        assert "load [" not in done.stderr  # no progress bar when stderr is not a terminal
    first, second = (scan_items(dynamodb, t) for t in tables)
    assert first == second and first


def test_cli_rejects_a_bad_mix(loader_moto_url: str, tmp_path: Path) -> None:
    done = _cli(["load", "--mix", "insert=60,delete=40"], loader_moto_url, tmp_path)
    assert done.returncode == 2
    assert "unknown operation 'delete'" in done.stderr


@pytest.mark.parametrize("update_items", [False, True], ids=["put", "update"])
def test_every_write_sets_the_ttl_attribute_to_its_time_plus_the_seconds(
    dynamodb: Any, update_items: bool
) -> None:
    table = _new_table(dynamodb)
    options = LoadOptions(
        table=table,
        count=120,
        keys=30,
        seed=3,
        modify_with_update=update_items,
        ttl_attribute="expires_at",
        ttl_seconds=3600,
    )
    ops = list(plan_operations(options))
    before = int(time.time())
    assert run_load(dynamodb, options, operations=ops).errors == 0
    after = int(time.time())
    items = scan_items(dynamodb, table)
    expected = expected_state(ops)
    assert items.keys() == expected.keys()
    for key, item in items.items():
        assert before + 3600 <= item.pop("expires_at") <= after + 3600
        assert item == expected[key]
