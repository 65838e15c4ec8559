"""``ddbcdc snapshot`` against moto (server mode) and a real PostgreSQL: a copy of every value
type, the version each row gets, a SIGKILL and ``--resume``, and the preconditions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from backfill_support import BackfillTable, backfill_table, rich_item
from ddbcdc.aws import clients as aws
from ddbcdc.aws.provision import ProvisionOptions, set_up
from ddbcdc.cli import main
from ddbcdc.local.stack import LocalStack
from ddbcdc.verify.compare import compare

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def table(
    local_stack: LocalStack,
    fresh_database: Callable[..., AbstractContextManager[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[BackfillTable]:
    with backfill_table(local_stack, fresh_database, tmp_path, monkeypatch=monkeypatch) as made:
        monkeypatch.setenv("DDBCDC_STREAM_NAME", f"{made.name}-stream")
        yield made


def wire(table: BackfillTable) -> None:
    """The table's stream and the bridge's tag, as ``ddbcdc setup`` makes them locally."""
    set_up(
        table.client(),
        table.client("kinesis"),
        ProvisionOptions(table=table.name, stream=f"{table.name}-stream", shards=1, local=True),
    )


def matches(table: BackfillTable) -> bool:
    engine = sa.create_engine(table.database_url)
    try:
        return compare(table.client(), engine, table.mapping).matches
    finally:
        engine.dispose()


def test_a_snapshot_copies_every_item_with_the_page_time_as_version(
    table: BackfillTable, capsys: pytest.CaptureFixture[str]
) -> None:
    table.put([rich_item(n, f"name{n}") for n in range(1, 301)])
    wire(table)
    before = time.time_ns() // 1000
    assert main(["snapshot", "--segments", "3", "--page-size", "40", "--no-progress"]) == 0
    after = time.time_ns() // 1000
    assert "300 items, upserted 300" in capsys.readouterr().out
    assert matches(table)
    row = table.query(
        f"SELECT first_name, score, active, avatar, profile, joined, _ddbcdc_version_us, "
        f'_ddbcdc_sequence, _ddbcdc_event_id FROM "{table.name}" WHERE userid = 7'
    )[0]
    assert row[:4] == ("name7", Decimal("7.50"), False, bytes([7, 0, 255]))
    assert row[4] == {"tags": ["a", "b"], "n": 1.0, "x": None}
    assert row[5].isoformat() == "2024-02-29T11:00:00+00:00"
    assert before - 5_000_000 <= row[6] <= after - 5_000_000  # page time minus the margin
    assert row[7] is None and row[8].startswith("snapshot:scan:")
    assert table.query(f'SELECT count(*) FROM "ddbcdc_changes__{table.name}"') == [(0,)]
    segments = table.query(
        "SELECT segment, done, items, position FROM ddbcdc_snapshot_segments ORDER BY segment"
    )
    assert [s[:2] for s in segments] == [(0, True), (1, True), (2, True)]
    assert sum(s[2] for s in segments) == 300 and all(s[3] is None for s in segments)
    assert table.query("SELECT count(*) FROM ddbcdc_prune_holds") == [(0,)]

    assert main(["status"]) == 1  # no shard progress: exit 1, backfills listed
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].split()[:3] == ["BACKFILL", "STATUS", "SEGMENTS"]
    assert lines[3].split()[1:4] == ["done", "3/3", "300/~300"]
    assert main(["status", "--json"]) == 1
    runs = json.loads(capsys.readouterr().out)["backfills"]
    assert [(r["kind"], r["status"], r["items"], r["segments_done"]) for r in runs] == [
        ("scan", "done", 300, 3)
    ]


def test_every_row_is_versioned_at_its_page_s_request_time_minus_the_margin(
    table: BackfillTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The clock moves on while each page is read (the response arrives 0.3 s later): each
    row's version is its page's request time minus the clock-skew margin; not the time the
    page came back, nor the run's start, nor the request time alone. The run's prune hold is
    below every row's version."""
    table.put([rich_item(n) for n in range(1, 31)])
    wire(table)
    monkeypatch.setenv("DDBCDC_CLOCK_SKEW_MARGIN", "PT7S")
    # Per page: (the time before its request, the time it was sent, its keys); a page is
    # requested after the one before it came back.
    pages: list[tuple[int, int, set[int]]] = []
    returned = [time.time_ns() // 1000]
    held: list[int] = []  # the run's prune hold, read while it runs

    def sent(**_: object) -> None:
        pages.append((returned[-1], time.time_ns() // 1000, set()))
        if not held:
            held.extend(v for (v,) in table.query("SELECT min_version_us FROM ddbcdc_prune_holds"))

    def read(parsed: dict[str, Any], **_: object) -> None:
        pages[-1][2].update(int(item["userid"]["N"]) for item in parsed.get("Items", ()))
        time.sleep(0.3)
        returned.append(time.time_ns() // 1000)

    def client(service: str, settings: Any, **options: Any) -> Any:
        made = make_client(service, settings, **options)
        if service == "dynamodb":
            made.meta.events.register("before-call.dynamodb.Scan", sent)
            made.meta.events.register("after-call.dynamodb.Scan", read)
        return made

    make_client = aws.client
    monkeypatch.setattr(aws, "client", client)
    assert main(["snapshot", "--segments", "1", "--page-size", "10", "--no-progress"]) == 0
    versions = dict(table.query(f'SELECT userid, _ddbcdc_version_us FROM "{table.name}"'))
    assert len(pages) >= 3 and sorted(versions) == list(range(1, 31))
    for earliest, latest, keys in pages:
        for userid in keys:
            assert earliest <= versions[userid] + 7_000_000 <= latest, (userid, pages)
    assert len(held) == 1 and held[0] <= min(versions.values())  # it keeps what a row may meet


def test_a_killed_snapshot_resumes_after_its_last_committed_page(
    table: BackfillTable, capsys: pytest.CaptureFixture[str]
) -> None:
    count = 1200
    table.put([rich_item(n) for n in range(1, count + 1)])
    wire(table)
    env = {**os.environ, **table.env, "DDBCDC_STREAM_NAME": f"{table.name}-stream"}
    argv = [sys.executable, "-m", "ddbcdc.cli", "snapshot", "--segments", "2"]
    argv += ["--page-size", "50", "--max-items-per-second", "300", "--no-progress"]
    log = table.mappings_dir.parent / "snapshot.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(argv, env=env, cwd=ROOT, stderr=sink)
    deadline = time.monotonic() + 120
    committed = 0
    while time.monotonic() < deadline and process.poll() is None:
        committed = table.query("SELECT coalesce(sum(items), 0) FROM ddbcdc_snapshot_segments")[0][
            0
        ]
        if committed >= 200:
            break
        time.sleep(0.05)
    assert process.poll() is None, log.read_text()

    def shown() -> tuple[str, int | None]:
        capsys.readouterr()
        main(["status", "--json"])
        (run,) = json.loads(capsys.readouterr().out)["backfills"]
        return run["status"], run["process"]

    status, backend = shown()  # a run its process holds: running, whatever its pace
    assert status == "running" and isinstance(backend, int)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert table.query("SELECT status FROM ddbcdc_snapshots") == [("running",)]
    assert shown() == ("running", None)  # just killed: not called stopped at once
    for name in ("ddbcdc_snapshots", "ddbcdc_snapshot_segments"):  # a minute and more later
        table.execute(f"UPDATE {name} SET updated_at = updated_at - interval '2 minutes'")
    assert shown() == ("stopped", None)
    assert table.query("SELECT count(*) FROM ddbcdc_prune_holds") == [(1,)]  # held across the kill
    assert main(["snapshot"]) == 2  # an unfinished run is not started over silently
    capsys.readouterr()
    assert main(["snapshot", "--resume", "--segments", "4", "--no-progress"]) == 0
    said = "resuming with the run's own 2 segments (--segments 4 is for a new scan)"
    assert said in capsys.readouterr().err
    assert matches(table)
    # Each page was applied once: the resumed segments began after their committed keys.
    assert table.query("SELECT sum(items), bool_and(done) FROM ddbcdc_snapshot_segments") == [
        (count, True)
    ]
    assert table.query("SELECT status FROM ddbcdc_snapshots") == [("done",)]
    assert table.query("SELECT count(*) FROM ddbcdc_prune_holds") == [(0,)]


def test_preconditions_refuse_an_unwired_table_and_a_lease_at_latest(
    table: BackfillTable, capsys: pytest.CaptureFixture[str]
) -> None:
    table.put([rich_item(1)])
    kinesis = table.client("kinesis")
    kinesis.create_stream(StreamName=f"{table.name}-stream", ShardCount=1)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # kinesis-local creates streams asynchronously
        summary = kinesis.describe_stream_summary(StreamName=f"{table.name}-stream")
        if summary["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
            break
        time.sleep(0.2)
    assert main(["snapshot", "--no-progress"]) == 2
    assert "is not wired to" in capsys.readouterr().err

    wire(table)
    shard = kinesis.list_shards(StreamName=f"{table.name}-stream")["Shards"][0]["ShardId"]
    leases = f"{table.name}-app"  # a KCL lease table as the worker leaves it
    client = table.client()
    client.create_table(
        TableName=leases,
        KeySchema=[{"AttributeName": "leaseKey", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "leaseKey", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    try:
        client.put_item(
            TableName=leases, Item={"leaseKey": {"S": shard}, "checkpoint": {"S": "LATEST"}}
        )
        assert main(["snapshot", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert f"refused (worker): shard {shard}'s lease" in err and "is at LATEST" in err
        assert table.query("SELECT count(*) FROM ddbcdc_snapshots") == [(0,)]

        client.put_item(
            TableName=leases, Item={"leaseKey": {"S": shard}, "checkpoint": {"S": "49650000"}}
        )
        assert main(["snapshot", "--no-progress", "--max-rcu", "1000"]) == 0
        assert matches(table)
    finally:
        client.delete_table(TableName=leases)


def test_a_lease_at_at_timestamp_must_read_from_before_the_hold_version(
    table: BackfillTable, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """KCL keeps only the word AT_TIMESTAMP in a lease and reads from the worker's configured
    time: a time after the backfill's hold version would skip the changes in between."""
    table.put([rich_item(1)])
    wire(table)
    kinesis = table.client("kinesis")
    shard = kinesis.list_shards(StreamName=f"{table.name}-stream")["Shards"][0]["ShardId"]
    leases = f"{table.name}-app"
    client = table.client()
    client.create_table(
        TableName=leases,
        KeySchema=[{"AttributeName": "leaseKey", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "leaseKey", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    try:
        client.put_item(
            TableName=leases, Item={"leaseKey": {"S": shard}, "checkpoint": {"S": "AT_TIMESTAMP"}}
        )
        later = time.time() + 3600
        monkeypatch.setenv("DDBCDC_INITIAL_POSITION", "AT_TIMESTAMP")
        monkeypatch.setenv("DDBCDC_INITIAL_POSITION_TIMESTAMP", str(later))
        assert main(["snapshot", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert f"refused (worker): shard {shard}'s lease of application {leases} is at" in err
        at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(later))
        assert f"AT_TIMESTAMP, which reads from {at}" in err  # both times named
        assert "and the backfill's rows are as of 20" in err
        assert table.query("SELECT count(*) FROM ddbcdc_snapshots") == [(0,)]

        monkeypatch.setenv("DDBCDC_INITIAL_POSITION_TIMESTAMP", str(time.time() - 3600))
        assert main(["snapshot", "--no-progress"]) == 0
        assert matches(table)
    finally:
        client.delete_table(TableName=leases)


def test_a_consistent_scan_is_what_each_page_asks_for(table: BackfillTable) -> None:
    """The snapshot reads with ConsistentRead (moto answers it; AWS would bill it double)."""
    table.put([rich_item(n) for n in range(1, 4)])
    client = aws.client("dynamodb", table.stack.settings())
    seen: list[dict[str, object]] = []
    client.meta.events.register(
        "provide-client-params.dynamodb.Scan", lambda params, **_: seen.append(dict(params))
    )
    from ddbcdc.backfill.scan import ReadLimiter, scan_pages

    pages = list(
        scan_pages(
            client, table.name, segment=1, total_segments=2, start_key=None, limiter=ReadLimiter()
        )
    )
    assert pages and all(p["ConsistentRead"] is True for p in seen)
    assert seen[0]["Segment"] == 1 and seen[0]["TotalSegments"] == 2
    assert all(p.request_us > 0 for p in pages)


def test_a_table_keyed_otherwise_than_its_mapping_is_refused_even_with_force(
    table: BackfillTable, capsys: pytest.CaptureFixture[str]
) -> None:
    """Items of distinct keys that share the mapping's key would become one row: a
    snapshot refuses the table before it starts, whatever --force says."""
    client = table.client()
    client.delete_table(TableName=table.name)
    client.create_table(
        TableName=table.name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    table.put([{**rich_item(1), "pk": {"S": f"a{n}"}} for n in range(3)])
    assert main(["snapshot", "--force", "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        f"ddbcdc snapshot: mapping {table.name}: key ['userid'] is not the key of DynamoDB "
        f"table {table.name} (['pk']): a snapshot needs them equal\n"
    )
    assert table.query("SELECT count(*) FROM ddbcdc_snapshots") == [(0,)]
    assert table.query(f'SELECT count(*) FROM "{table.name}"') == [(0,)]


def test_a_mapping_its_table_was_not_migrated_to_is_refused_before_the_run_starts(
    table: BackfillTable, capsys: pytest.CaptureFixture[str]
) -> None:
    """No batch of the run could be written: it is refused at once, naming the change and
    the way out, leaving no unfinished run (nor its prune hold) to resume or abandon."""
    table.put([rich_item(1)])
    wire(table)
    path = table.mappings_dir / f"{table.name}.json"
    document = json.loads(path.read_text())
    document["columns"][2]["rules"] = []  # phone: digits_only no more, not migrated
    path.write_text(json.dumps(document))
    assert main(["snapshot", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ddbcdc snapshot: mapping {path} differs from the one table ")
    assert "column 'phone': rules ['digits_only'] -> []" in err and err.count("\n") == 1
    assert "Run ddbcdc migrate with this mapping" in err and "--resume" not in err
    assert table.query("SELECT count(*) FROM ddbcdc_snapshots") == [(0,)]
    assert table.query("SELECT count(*) FROM ddbcdc_prune_holds") == [(0,)]


def test_a_timestamp_finer_than_microseconds_is_a_dead_letter_not_truncated(
    table: BackfillTable,
) -> None:
    """PostgreSQL keeps microseconds: a 7th non-zero digit (an Instant's nanoseconds) cannot
    be stored exactly, so the item is a dead letter naming the attribute, as epoch seconds
    finer than microseconds are; trailing zeros are exact and go in."""
    table.put(
        [
            {**rich_item(1), "joined": {"S": "2024-02-29T12:00:00.123456789+01:00"}},
            {**rich_item(2), "joined": {"S": "2024-02-29T12:00:00.1234560+01:00"}},
        ]
    )
    wire(table)
    assert main(["snapshot", "--no-progress"]) == 1
    rows = table.query(f'SELECT userid, joined FROM "{table.name}"')
    assert [(u, j.isoformat()) for u, j in rows] == [(2, "2024-02-29T11:00:00.123456+00:00")]
    assert table.query("SELECT stage, error, error_path FROM ddbcdc_dead_letters") == [
        (
            "cleanse",
            f"{table.name}.joined: timestamp finer than microseconds",
            "dynamodb.NewImage.joined",
        )
    ]


def test_a_resume_while_the_run_goes_on_in_another_process_is_refused(
    table: BackfillTable, capsys: pytest.CaptureFixture[str]
) -> None:
    """The run's segments are scanned by one process: a second one would read them again
    and move their positions back and forth (and a run could not tell when it is done)."""
    count = 600
    table.put([rich_item(n) for n in range(1, count + 1)])
    wire(table)
    env = {**os.environ, **table.env, "DDBCDC_STREAM_NAME": f"{table.name}-stream"}
    argv = [sys.executable, "-m", "ddbcdc.cli", "snapshot", "--segments", "2"]
    argv += ["--page-size", "50", "--max-items-per-second", "200", "--no-progress"]
    process = subprocess.Popen(argv, env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    query = "SELECT coalesce(sum(items), 0) FROM ddbcdc_snapshot_segments"
    while time.monotonic() < deadline and table.query(query)[0][0] < 100:
        time.sleep(0.05)
    assert process.poll() is None, process.communicate()
    assert main(["snapshot", "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "is running in another process now (PostgreSQL backend " in err
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert table.query("SELECT sum(items), bool_and(done) FROM ddbcdc_snapshot_segments") == [
        (count, True)
    ]
    assert matches(table)
