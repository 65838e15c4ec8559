"""An incremental export imported into a mapping that keeps deleted rows: its REMOVEs do not
say who removed the item, so they take the mode that keeps more, with the line's OldImage as
the row when the export has one (``ddbcdc snapshot --from-export``, ``ddbcdc apply``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from ddbcdc.cli import main
from ddbcdc.local.postgres import free_port
from ddbcdc.schema.mapping import load_mappings
from export_fixtures import customer, full_lines, incremental_line, write_export

ROOT = Path(__file__).resolve().parents[2]
EXPORT_US = 1_764_000_000_123_000
LATER = EXPORT_US + 60_000_000


@pytest.fixture(params=[("hard", "keep"), ("soft", "delete")], ids=["keep", "soft"])
def db(
    request: pytest.FixtureRequest,
    fresh_database: Callable[..., AbstractContextManager[str]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[tuple[str, str]]:
    deletes, ttl_deletes = request.param
    doc = json.loads((ROOT / "schemas" / "tables" / "customers.json").read_text())
    doc.update(deletes=deletes, ttl_deletes=ttl_deletes)
    folder = tmp_path / "mappings"
    folder.mkdir()
    (folder / "customers.json").write_text(json.dumps(doc))
    with fresh_database("t_export_modes", mappings=load_mappings(folder)) as url:
        nowhere = f"http://127.0.0.1:{free_port()}"  # no AWS: the imports go ahead with --force
        for name, value in {
            "DATABASE_URL": url,
            "DDBCDC_MAPPINGS_DIR": str(folder),
            "DDBCDC_DYNAMODB_ENDPOINT": nowhere,
            "DDBCDC_KINESIS_ENDPOINT": nowhere,
            "DDBCDC_STREAM_NAME": "ddbcdc-test",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }.items():
            monkeypatch.setenv(name, value)
        yield url, deletes


def rows(url: str) -> dict[int, tuple[Any, ...]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        cols = [c["name"] for c in sa.inspect(conn).get_columns("customers")]
        marked = "_ddbcdc_deleted_at IS NOT NULL" if "_ddbcdc_deleted_at" in cols else "false"
        found = conn.execute(sa.text(f"SELECT userid, first_name, {marked} FROM customers"))
        out = {r[0]: tuple(r[1:]) for r in found}
    engine.dispose()
    return out


def test_an_incremental_exports_removes_keep_the_rows(db: tuple[str, str], tmp_path: Path) -> None:
    url, deletes = db
    full = write_export(
        tmp_path / "full",
        {"a.json.gz": full_lines([customer(n, f"name{n}") for n in (1, 2, 3)])},
        export_id="01764000000123-full0001",
        export_time_us=EXPORT_US,
    )
    assert main(["snapshot", "--from-export", str(full), "--force", "--no-progress"]) == 0
    incremental = write_export(
        tmp_path / "incr",
        {
            "b.json.gz": [
                incremental_line(LATER, {"userid": {"N": "1"}}, old=customer(1, "last1")),
                incremental_line(LATER + 1, {"userid": {"N": "2"}}),  # no OldImage
            ]
        },
        export_id="01764000060000-incr0001",
        incremental=(EXPORT_US, LATER + 10),
    )
    assert main(["snapshot", "--from-export", str(incremental), "--force", "--no-progress"]) == 0
    soft = deletes == "soft"
    assert rows(url) == {1: ("last1", soft), 2: ("name2", soft), 3: ("name3", False)}
