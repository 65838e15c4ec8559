"""Shared by the mapping evolution tests: mappings on disk, the migrate command, items."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from change_records import record
from ddbcdc.cli import main
from ddbcdc.pipeline import Pipeline, SourceRecord
from ddbcdc.schema.mapping import TableMapping, load_mappings

SHIPPED_DIR = Path(__file__).resolve().parents[2] / "schemas" / "tables"
US = 1_700_000_000_000_000


def shipped() -> dict[str, Any]:
    """The shipped customers mapping document (a fresh copy)."""
    return copy.deepcopy(json.loads((SHIPPED_DIR / "customers.json").read_text()))


class Mappings:
    """A mappings directory the CLI reads (``DDBCDC_MAPPINGS_DIR``), written per step."""

    def __init__(self, directory: Path, monkeypatch: pytest.MonkeyPatch, url: str) -> None:
        self.directory = directory
        monkeypatch.setenv("DATABASE_URL", url)
        monkeypatch.setenv("DDBCDC_MAPPINGS_DIR", str(directory))

    def write(self, doc: dict[str, Any]) -> TableMapping:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "customers.json").write_text(json.dumps(doc))
        (mapping,) = load_mappings(self.directory)
        return mapping


def migrate(*args: str) -> int:
    """``ddbcdc migrate ARGS`` in this process: its exit status."""
    return main(["migrate", *args])


def columns(engine: sa.Engine, table: str = "customers") -> dict[str, tuple[str, bool]]:
    """Column name -> (type, nullable) as PostgreSQL has them."""
    with engine.connect() as conn:
        found = sa.inspect(conn).get_columns(table)
    return {c["name"]: (str(c["type"]), bool(c["nullable"])) for c in found}


def change(userid: int, image: dict[str, Any], *, us: int = US) -> SourceRecord:
    """An INSERT of customer ``userid`` with ``image`` (Python values)."""
    data = record("INSERT", {"userid": userid}, us, image=image, eid=uuid.uuid4().hex)
    return SourceRecord(data, shard_id="shardId-1", sequence_number=None)


def write_items(engine: sa.Engine, mapping: TableMapping, items: dict[int, dict[str, Any]]) -> None:
    """Apply an INSERT per item with ``mapping`` (through the real pipeline)."""
    pipeline = Pipeline(engine=engine, mappings=[mapping])
    result = pipeline.process([change(k, v) for k, v in items.items()])
    assert result.dead_lettered == 0, result
