"""``ddbcdc apply``: a file (or stdin) of change records into PostgreSQL, with a summary."""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from ddbcdc.commands import apply
from ddbcdc.decode.attributes import marshal
from ddbcdc.schema.mapping import load_mappings

SHIPPED_DIR = Path(__file__).resolve().parents[2] / "schemas" / "tables"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SHIPPED = load_mappings(SHIPPED_DIR)
US = 1_700_000_000_000_000


@pytest.fixture(scope="module")
def db(fresh_database: Callable[..., AbstractContextManager[str]]) -> Iterator[str]:
    with fresh_database("t_apply", mappings=SHIPPED) as url:
        yield url


@pytest.fixture
def env(db: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DATABASE_URL", db)
    monkeypatch.setenv("DDBCDC_MAPPINGS_DIR", str(SHIPPED_DIR))
    engine = sa.create_engine(db)
    with engine.begin() as conn:
        for table in (
            "customers",
            "ddbcdc_versions__customers",
            "ddbcdc_changes__customers",
            "ddbcdc_dead_letters",
        ):
            conn.execute(sa.text(f"DELETE FROM {table}"))
    engine.dispose()
    return db


def line(event: str, userid: int, us: int, **image: Any) -> bytes:
    dynamodb: dict[str, Any] = {
        "ApproximateCreationDateTime": us,
        "Keys": marshal({"userid": userid}),
    }
    if event != "REMOVE":
        dynamodb["NewImage"] = marshal({"userid": userid, **image})
    return orjson.dumps(
        {
            "awsRegion": "us-east-1",
            "eventID": uuid.uuid4().hex,
            "eventName": event,
            "tableName": "customers",
            "dynamodb": dynamodb,
            "eventSource": "aws:dynamodb",
        }
    )


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    apply.register(parser.add_subparsers())
    args = parser.parse_args(["apply", *argv])
    return int(args.func(args))


def customers(url: str) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT userid, first_name, last_name, phone FROM customers ORDER BY userid")
        ).all()
    engine.dispose()
    return [tuple(r) for r in rows]


def test_apply_file_in_batches(
    env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [
        line("INSERT", 1, US, first_name=" Ada ", last_name="Lovelace", phone=5550100),
        base64.b64encode(line("INSERT", 2, US, first_name="Alan")),  # base64 lines work too
        b"",
        line("MODIFY", 1, US + 5, first_name="Ada", last_name="King", phone="+1 555-0101"),
        line("INSERT", 1, US + 1, first_name="stale"),
        line("REMOVE", 2, US + 9),
        line("INSERT", 3, US, first_name="Grace"),
    ]
    path = tmp_path / "changes.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert run([str(path), "--batch-size", "2", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["received"] == 6
    assert (summary["upserted"], summary["deleted"], summary["dead_lettered"]) == (4, 1, 0)
    assert summary["stale"] == 1 and summary["changes_per_second"] > 0
    assert customers(env) == [(1, "Ada", "King", "15550101"), (3, "Grace", None, None)]


def test_apply_stdin_with_a_poison_line(
    env: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = (
        b"\n".join(
            [
                line("INSERT", 7, US, first_name="ok"),
                b"{not json",
                line("INSERT", 8, US, first_name="x", phone={"M": 1}),
            ]
        )
        + b"\n"
    )
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert run(["-"]) == 1  # something was dead-lettered
    out = capsys.readouterr().out
    assert "received 3, upserted 1, deleted 0, stale/skipped 0, dead-lettered 2" in out
    assert customers(env) == [(7, "ok", None, None)]


def test_missing_file_is_a_clear_error(env: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["/nonexistent/changes.jsonl"]) == 2
    assert "cannot read /nonexistent/changes.jsonl" in capsys.readouterr().err


def test_a_closed_stdin_is_a_clear_error(
    env: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", None)  # as Python sets it when fd 0 is closed
    assert run([]) == 2
    assert capsys.readouterr().err == "ddbcdc apply: cannot read -: standard input is closed\n"


def _applied(
    fresh_database: Callable[..., AbstractContextManager[str]], path: Path, speedups: str
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """``ddbcdc apply`` of ``path`` into a fresh database under ``DDBCDC_SPEEDUPS``: its
    summary (without timings) and every row it left (without the times they were written)."""
    with fresh_database("t_apply_paths", mappings=SHIPPED) as url:
        env = {**os.environ, "DATABASE_URL": url, "DDBCDC_MAPPINGS_DIR": str(SHIPPED_DIR)}
        env["DDBCDC_SPEEDUPS"] = speedups
        ddbcdc = str(Path(sys.executable).parent / "ddbcdc")
        done = subprocess.run(
            [ddbcdc, "apply", str(path), "--json", "--batch-size", "7"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode in (0, 1), done.stderr
        summary = json.loads(done.stdout)
        engine = sa.create_engine(url)
        tables = {}
        with engine.connect() as conn:
            for table in (
                "customers",
                "ddbcdc_versions__customers",
                "ddbcdc_changes__customers",
                "ddbcdc_dead_letters",
            ):
                query = sa.text(
                    f"SELECT to_jsonb(t) - ARRAY['id', 'received_at', '_ddbcdc_updated_at', "
                    f"'_ddbcdc_changed_at', '_ddbcdc_received_at'] FROM {table} t"
                )
                tables[table] = sorted(
                    json.dumps(r, sort_keys=True) for (r,) in conn.execute(query)
                )
        engine.dispose()
    return {k: v for k, v in summary.items() if "second" not in k}, tables


def test_both_decode_paths_leave_the_same_rows_and_dead_letters(
    fresh_database: Callable[..., AbstractContextManager[str]], tmp_path: Path
) -> None:
    """The sample stream and every fixture record (valid and broken, every format), applied
    in pure Python (DDBCDC_SPEEDUPS=0) and through the C speedups (1): the same rows, change
    log, tombstones and dead letters (their errors included)."""
    lines = FIXTURES.joinpath("sample-records.jsonl").read_bytes().splitlines()
    for fixture in sorted(FIXTURES.joinpath("records").glob("*/*.json")):
        lines.append(orjson.dumps(orjson.loads(fixture.read_bytes())))
    path = tmp_path / "changes.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    python = _applied(fresh_database, path, "0")
    assert python[0]["received"] == len(lines) and python[0]["dead_lettered"] >= 10
    assert len(python[1]["customers"]) >= 3
    assert _applied(fresh_database, path, "1") == python


def test_an_attribute_name_cannot_break_or_forge_a_line_on_stderr(env: str, tmp_path: Path) -> None:
    forged = "x\n2026-01-01 00:00:00,000 ERROR ddbcdc forged\x00\x1b[2J"
    record = orjson.loads(line("INSERT", 9, US, first_name="ok"))
    record["dynamodb"]["NewImage"]["m"] = {"M": {forged: {"N": "not a number"}}}
    path = tmp_path / "forged.jsonl"
    path.write_bytes(orjson.dumps(record) + b"\n")
    done = subprocess.run(
        [str(Path(sys.executable).parent / "ddbcdc"), "apply", str(path)],
        env={**os.environ, "DATABASE_URL": env, "DDBCDC_MAPPINGS_DIR": str(SHIPPED_DIR)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    assert not any(text.startswith("2026-01-01") for text in lines), lines
    assert not any(c in done.stderr for c in "\x00\x1b"), lines
    logged = [text for text in lines if "dead-lettering a record" in text]
    reported = [text for text in lines if text.startswith("dead-lettered (decode)")]
    assert len(logged) == len(reported) == 1, lines
    escaped = "x\\x0a2026-01-01 00:00:00,000 ERROR ddbcdc forged\\x00\\x1b[2J"
    assert escaped in logged[0] and escaped in reported[0]
