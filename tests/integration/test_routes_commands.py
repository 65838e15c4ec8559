"""The single-table ``shop`` through the public commands, on a real PostgreSQL: ``ddbcdc
snapshot --from-export`` merged with ``ddbcdc apply`` of stream changes per DynamoDB key
(entity changes moving items between tables, keys-only REMOVEs), and ``ddbcdc migrate``
adding a route that takes its items from the catch-all, after which a writer still running
the old mapping commits nothing. No AWS here: the export's preconditions cannot run, so the
import goes ahead with --force."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from ddbcdc.cli import main
from ddbcdc.decode.attributes import marshal
from ddbcdc.errors import MappingChangedError
from ddbcdc.local.postgres import free_port
from ddbcdc.pipeline import Pipeline, SourceRecord
from ddbcdc.schema.mapping import parse_mapping
from export_fixtures import full_lines, write_export
from shop_records import SHOP_FILE, image, record, table_state, versions_state

EXPORT_US = 1_764_000_000_123_000  # 2025-11-24T16:00:00.123Z
MARGIN_US = 5_000_000  # the default DDBCDC_CLOCK_SKEW_MARGIN

PROFILE = ("CUSTOMER#1", "PROFILE")
ORDER = ("CUSTOMER#1", "ORDER#2024-05-01#10")
LINE = ("ORDER#10", "LINE#1")
ODD = ("CUSTOMER#01", "PROFILE")  # not customer 1: unmatched
ORDER_DATE = date(2024, 5, 1)


def shop_document(*, lines: bool = True) -> dict[str, Any]:
    """The shipped shop mapping (``lines``: with its order lines route, the last one)."""
    document: dict[str, Any] = json.loads(SHOP_FILE.read_text())
    if not lines:
        document["routes"] = [
            r for r in document["routes"] if r["target_table"] != "shop_order_lines"
        ]
    return document


@pytest.fixture
def shop_env(
    fresh_database: Callable[..., AbstractContextManager[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[[dict[str, Any]], AbstractContextManager[str]]:
    """A database migrated for a shop mapping document, which the commands read from their
    mappings folder."""

    @contextlib.contextmanager
    def make(document: dict[str, Any]) -> Iterator[str]:
        folder = tmp_path / "mappings"
        folder.mkdir(exist_ok=True)
        (folder / "shop.json").write_text(json.dumps(document))
        mapping = parse_mapping(document, name="shop")
        with fresh_database("t_routes_cmd", mappings=(mapping,)) as url:
            nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens: AWS is unreachable
            for name, value in {
                "DATABASE_URL": url,
                "DDBCDC_MAPPINGS_DIR": str(folder),
                "DDBCDC_SOURCE_TABLE": "shop",
                "DDBCDC_DYNAMODB_ENDPOINT": nowhere,
                "DDBCDC_KINESIS_ENDPOINT": nowhere,
                "DDBCDC_STREAM_NAME": "ddbcdc-test",
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
            }.items():
                monkeypatch.setenv(name, value)
            yield url

    return make


def state(url: str) -> tuple[dict[str, dict[tuple[Any, ...], str]], dict[Any, str | None]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        found = table_state(conn), versions_state(conn)
    engine.dispose()
    return found


def write_records(path: Path, records: list[bytes]) -> Path:
    path.write_bytes(b"".join(r + b"\n" for r in records))
    return path


def test_an_export_and_stream_changes_merge_per_dynamodb_key(
    shop_env: Callable[[dict[str, Any]], AbstractContextManager[str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    items = [
        image(PROFILE, "customer", "ada"),
        image(ORDER, "cart", "open"),  # a cart: unmatched until it becomes an order
        image(LINE, "line", "sku-1"),
        image(ODD, "customer", "odd"),
    ]
    folder = write_export(
        tmp_path / "export",
        {"items.json.gz": full_lines([marshal(i) for i in items])},
        export_id="01764000000123-shop0001",
        table="shop",
        export_time_us=EXPORT_US,
    )
    before, after = EXPORT_US - 10 * MARGIN_US, EXPORT_US + 60_000_000
    changes = write_records(
        tmp_path / "changes.jsonl",
        [
            # older than the export's rows: each loses to them, whatever its route
            record("MODIFY", ORDER, before, eid="old-1", item=image(ORDER, "order", "stale")),
            record("REMOVE", LINE, before + 1, eid="old-2"),
            # newer: the cart becomes an order (moves), the customer goes (keys only)
            record("MODIFY", ORDER, after, eid="new-1", item=image(ORDER, "order", "paid")),
            record("REMOVE", PROFILE, after + 1, eid="new-2"),
        ],
    )
    with shop_env(shop_document()) as url:
        assert main(["snapshot", "--from-export", str(folder), "--force", "--no-progress"]) == 0
        assert "4 items, upserted 4" in capsys.readouterr().out
        tables, _ = state(url)
        assert tables["shop_unmatched"] == {ORDER: "open", ODD: "odd"}
        assert main(["apply", str(changes)]) == 0
        tables, versions = state(url)
    assert tables == {
        "shop_customers": {},
        "shop_orders": {(1, ORDER_DATE, 10): "paid"},
        "shop_order_lines": {(10, 1): "sku-1"},
        "shop_unmatched": {ODD: "odd"},
    }
    assert versions == {
        PROFILE: None,
        ORDER: "shop_orders",
        LINE: "shop_order_lines",
        ODD: "shop_unmatched",
    }


def test_migrate_adds_a_route_filled_from_the_catch_all_and_fences_old_writers(
    shop_env: Callable[[dict[str, Any]], AbstractContextManager[str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    us = 1_700_000_000_000_000
    first = write_records(
        tmp_path / "first.jsonl",
        [
            record("INSERT", PROFILE, us, eid="a-1", item=image(PROFILE, "customer", "ada")),
            record("INSERT", LINE, us + 1, eid="a-2", item=image(LINE, "line", "sku-1")),
            record("INSERT", ("ORDER#10", "LINE#2"), us + 2, eid="a-3",
                   item=image(("ORDER#10", "LINE#2"), "line", "sku-2")),
        ],
    )  # fmt: skip
    with shop_env(shop_document(lines=False)) as url:
        assert main(["apply", str(first)]) == 0
        tables, _ = state_without_lines(url)
        assert set(tables["shop_unmatched"]) == {LINE, ("ORDER#10", "LINE#2")}
        old = parse_mapping(shop_document(lines=False), name="shop")
        stale = Pipeline(engine=sa.create_engine(url), mappings=[old])
        (tmp_path / "mappings" / "shop.json").write_text(json.dumps(shop_document()))
        capsys.readouterr()
        assert main(["migrate"]) == 0
        out = capsys.readouterr().out
        assert "created table shop_order_lines" in out
        assert "backfilled shop (shop_order_lines): 2 rows, 2 filled, 0 dead letters" in out
        tables, versions = state(url)
        assert tables["shop_order_lines"] == {(10, 1): "sku-1", (10, 2): "sku-2"}
        assert tables["shop_unmatched"] == {}
        assert versions[LINE] == "shop_order_lines"
        # A writer still running the old mapping commits nothing, whatever route it writes.
        newer = record("MODIFY", LINE, us + 10, eid="b-1", item=image(LINE, "line", "sku-9"))
        with pytest.raises(MappingChangedError, match="shop"):
            stale.process([SourceRecord(newer)])
        stale.close()
        assert state(url)[0]["shop_order_lines"][(10, 1)] == "sku-1"
        # One with the new mapping writes the route's table.
        assert main(["apply", str(write_records(tmp_path / "b.jsonl", [newer]))]) == 0
        assert state(url)[0]["shop_order_lines"][(10, 1)] == "sku-9"


def state_without_lines(
    url: str,
) -> tuple[dict[str, dict[tuple[Any, ...], str]], dict[Any, str | None]]:
    """:func:`state` before the order lines route has a table."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT pk, sk, item->>'name' FROM shop_unmatched"))
        unmatched = {(r[0], r[1]): r[2] for r in rows}
        versions = versions_state(conn)
    engine.dispose()
    return {"shop_unmatched": unmatched}, dict(versions)


def test_a_versions_row_naming_a_route_that_cannot_hold_its_key_stalls_nothing(
    shop_env: Callable[[dict[str, Any]], AbstractContextManager[str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    us = EXPORT_US
    written = write_records(
        tmp_path / "written.jsonl",
        [record("INSERT", ORDER, us, eid="e1", item=image(ORDER, "order", "paid"))],
    )
    removed = write_records(tmp_path / "removed.jsonl", [record("REMOVE", ORDER, us + 1, eid="e2")])
    with shop_env(shop_document()) as url:
        assert main(["apply", str(written)]) == 0
        # Drift in the bookkeeping: the key's versions row names the customers route, whose
        # key template ("CUSTOMER#{customer_id}", "PROFILE") cannot hold an order's key.
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE ddbcdc_versions__shop SET _ddbcdc_route = 'shop_customers'")
            )
        engine.dispose()
        capsys.readouterr()
        assert main(["apply", str(removed)]) == 0
        assert "Traceback" not in capsys.readouterr().err
        tables, versions = state(url)
    assert tables["shop_orders"] == {} and tables["shop_customers"] == {}
    assert versions == {ORDER: None}
