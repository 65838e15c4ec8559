"""A DynamoDB table of its own on the session's local stack, its mapping and database, for
the backfill and verify tests (each test gets fresh names, so they share one stack)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from ddbcdc.aws import clients as aws
from ddbcdc.local.stack import LocalStack
from ddbcdc.schema.mapping import TableMapping, load_mappings
from shop_records import SHOP_FILE

RICH_COLUMNS = [
    {"name": "userid", "type": "bigint", "required": True},
    {"name": "first_name", "type": "text", "rules": ["trim"]},
    {"name": "phone", "type": "text", "rules": ["digits_only"]},
    {"name": "score", "type": "numeric"},
    {"name": "active", "type": "boolean"},
    {"name": "avatar", "type": "bytea"},
    {"name": "profile", "type": "jsonb"},
    {"name": "joined", "type": "timestamptz"},
]


@dataclass
class BackfillTable:
    """A source table, its mapping and its PostgreSQL database."""

    stack: LocalStack
    name: str
    mapping: TableMapping
    mappings_dir: Path
    database_url: str
    env: dict[str, str] = field(default_factory=dict)

    def client(self, service: str = "dynamodb") -> Any:
        return aws.client(service, self.stack.settings())

    def put(self, items: list[dict[str, Any]]) -> None:
        """Write marshalled items (BatchWriteItem, 25 at a time)."""
        client = self.client()
        for start in range(0, len(items), 25):
            requests = [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]
            pending: dict[str, Any] = {self.name: requests}
            while pending:
                pending = client.batch_write_item(RequestItems=pending).get("UnprocessedItems")

    def query(self, text: str, **params: Any) -> list[Any]:
        engine = sa.create_engine(self.database_url)
        with engine.connect() as conn:
            rows = list(conn.execute(sa.text(text), params).all())
        engine.dispose()
        return rows

    def execute(self, text: str, **params: Any) -> None:
        engine = sa.create_engine(self.database_url)
        with engine.begin() as conn:
            conn.execute(sa.text(text), params)
        engine.dispose()


def rich_item(userid: int, name: str = "Ada") -> dict[str, Any]:
    """An item with every kind of value the rich mapping holds."""
    return {
        "userid": {"N": str(userid)},
        "first_name": {"S": f" {name} "},
        "phone": {"N": str(5550000000 + userid)},
        "score": {"N": f"{userid}.50"},
        "active": {"BOOL": userid % 2 == 0},
        "avatar": {"B": bytes([userid % 256, 0, 255])},
        "profile": {"M": {"tags": {"SS": ["a", "b"]}, "n": {"N": "1.0"}, "x": {"NULL": True}}},
        "joined": {"S": "2024-02-29T12:00:00+01:00"},
    }


@contextmanager
def backfill_table(
    stack: LocalStack,
    fresh_database: Callable[..., AbstractContextManager[str]],
    tmp_path: Path,
    *,
    columns: list[dict[str, Any]] | None = None,
    extra: dict[str, str] | None = None,
    monkeypatch: pytest.MonkeyPatch | None = None,
    modes: dict[str, str] | None = None,
) -> Iterator[BackfillTable]:
    """Create the table (key ``userid`` N), a mapping for it (``extra``: its kept columns;
    ``modes``: its ``deletes`` and ``ttl_deletes``) and a migrated database; with
    ``monkeypatch``, its environment (the stack's included) is set in this process too."""
    name = f"bf_{uuid.uuid4().hex[:10]}"
    folder = tmp_path / "mappings"
    folder.mkdir(exist_ok=True)
    mapping_doc = {
        "source_table": name,
        "target_table": name,
        "key": ["userid"],
        "change_log": True,
        "columns": columns or RICH_COLUMNS,
    }
    if extra is not None:
        mapping_doc["extra"] = extra
    mapping_doc.update(modes or {})
    (folder / f"{name}.json").write_text(json.dumps(mapping_doc))
    (mapping,) = load_mappings(folder)
    if monkeypatch is not None:
        for key, value in stack.env.items():
            monkeypatch.setenv(key, value)
    client = aws.client("dynamodb", stack.settings())
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "userid", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "userid", "AttributeType": "N"}],
        BillingMode="PAY_PER_REQUEST",
    )
    try:
        with fresh_database("t_backfill", mappings=(mapping,)) as url:
            env = {
                **stack.env,
                "DATABASE_URL": url,
                "DDBCDC_MAPPINGS_DIR": str(folder),
                "DDBCDC_SOURCE_TABLE": name,
                "DDBCDC_APPLICATION_NAME": f"{name}-app",
            }
            if monkeypatch is not None:
                for key, value in env.items():
                    monkeypatch.setenv(key, value)
            yield BackfillTable(stack, name, mapping, folder, url, env)
    finally:
        client.delete_table(TableName=name)


@contextmanager
def shop_table(
    stack: LocalStack,
    fresh_database: Callable[..., AbstractContextManager[str]],
    tmp_path: Path,
    *,
    monkeypatch: pytest.MonkeyPatch,
    logged: bool = False,
) -> Iterator[BackfillTable]:
    """A single-table design (key ``PK``, ``SK``: S) under the shipped routed ``shop`` mapping
    (``logged``: every route keeps a change log), its database migrated, its environment set."""
    name = f"st_{uuid.uuid4().hex[:10]}"
    folder = tmp_path / "mappings"
    folder.mkdir(exist_ok=True)
    document = json.loads(SHOP_FILE.read_text())
    document["source_table"] = name
    if logged:
        for route in document["routes"]:
            route["change_log"] = True
    (folder / "shop.json").write_text(json.dumps(document))
    (mapping,) = load_mappings(folder)
    for key, value in stack.env.items():
        monkeypatch.setenv(key, value)
    client = aws.client("dynamodb", stack.settings())
    client.create_table(
        TableName=name,
        KeySchema=[
            {"AttributeName": "PK", "KeyType": "HASH"},
            {"AttributeName": "SK", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "PK", "AttributeType": "S"},
            {"AttributeName": "SK", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    try:
        with fresh_database("t_shop", mappings=(mapping,)) as url:
            env = {
                **stack.env,
                "DATABASE_URL": url,
                "DDBCDC_MAPPINGS_DIR": str(folder),
                "DDBCDC_SOURCE_TABLE": name,
                "DDBCDC_APPLICATION_NAME": f"{name}-app",
            }
            for key, value in env.items():
                monkeypatch.setenv(key, value)
            yield BackfillTable(stack, name, mapping, folder, url, env)
    finally:
        client.delete_table(TableName=name)
