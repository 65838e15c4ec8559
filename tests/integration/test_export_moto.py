"""Exports through S3 on moto (server mode): ``ddbcdc export`` (ExportTableToPointInTime,
which moto writes without manifests) and ``--from-export s3://...`` of an export laid out as
AWS writes it, a corrupt data file included."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
import sqlalchemy as sa

from backfill_support import BackfillTable, backfill_table, rich_item
from ddbcdc.aws.provision import ProvisionOptions, set_up
from ddbcdc.cli import main
from ddbcdc.local.stack import LocalStack
from ddbcdc.verify.compare import compare
from export_fixtures import full_lines, write_export


@pytest.fixture
def table(
    local_stack: LocalStack,
    fresh_database: Callable[..., AbstractContextManager[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[BackfillTable]:
    with backfill_table(local_stack, fresh_database, tmp_path, monkeypatch=monkeypatch) as made:
        stream = f"{made.name}-stream"
        monkeypatch.setenv("DDBCDC_STREAM_NAME", stream)
        set_up(
            made.client(),
            made.client("kinesis"),
            ProvisionOptions(table=made.name, stream=stream, shards=1, local=True),
        )
        yield made


def bucket(table: BackfillTable) -> str:
    name = f"exports-{uuid.uuid4().hex[:8]}"
    table.client("s3").create_bucket(Bucket=name)
    return name


def test_ddbcdc_export_requests_waits_and_imports(
    table: BackfillTable, capsys: pytest.CaptureFixture[str]
) -> None:
    table.put([rich_item(n, f"name{n}") for n in range(1, 151)])
    client = table.client()
    argv = ["export", "--bucket", bucket(table), "--poll", "0.2", "--no-progress"]
    assert main(argv) == 2
    assert "point-in-time recovery is not enabled" in capsys.readouterr().err
    client.update_continuous_backups(
        TableName=table.name,
        PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
    )
    before = time.time_ns() // 1000
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "has no manifests: data files are not checked" in captured.err  # moto writes none
    assert "150 items, upserted 150" in captured.out
    engine = sa.create_engine(table.database_url)
    assert compare(client, engine, table.mapping).matches
    engine.dispose()
    (version,) = table.query(f'SELECT DISTINCT _ddbcdc_version_us FROM "{table.name}"')[0]
    assert before - 5_000_000 <= version <= before  # the request time minus the margin
    assert table.query("SELECT kind, status FROM ddbcdc_snapshots") == [("export", "done")]


def test_an_export_in_s3_is_checked_file_by_file(
    table: BackfillTable, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = bucket(table)
    export_id = "01764000000123-s3000001"
    folder = write_export(
        tmp_path / "export",
        {
            "a.json.gz": full_lines([rich_item(n) for n in range(1, 41)]),
            "b.json.gz": full_lines([rich_item(n) for n in range(41, 61)]),
        },
        export_id=export_id,
        table=table.name,
        export_time_us=(time.time_ns() // 1000) // 1000 * 1000,
        prefix="daily",
    )
    s3 = table.client("s3")
    root = f"daily/AWSDynamoDB/{export_id}"
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            if path.name == "b.json.gz":
                data = data[:-9] + bytes(9)  # the trailer damaged in transit
            s3.put_object(Bucket=name, Key=f"{root}/{path.relative_to(folder)}", Body=data)
    uri = f"s3://{name}/{root}/"
    assert main(["snapshot", "--from-export", uri, "--no-progress"]) == 2
    assert f"s3://{name}/{root}/data/b.json.gz: MD5 checksum" in capsys.readouterr().err
    assert table.query(f'SELECT count(*) FROM "{table.name}"') == [(40,)]

    s3.put_object(
        Bucket=name, Key=f"{root}/data/b.json.gz", Body=(folder / "data" / "b.json.gz").read_bytes()
    )
    assert main(["snapshot", "--from-export", uri, "--no-progress"]) == 0
    assert table.query(f'SELECT count(*) FROM "{table.name}"') == [(60,)]
    assert table.query("SELECT source FROM ddbcdc_snapshots") == [(f"s3://{name}/{root}",)]
