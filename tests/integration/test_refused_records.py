"""Records PostgreSQL refuses, keys that would merge, text it cannot hold: each is a dead
letter naming what and where (never a value), the rest of its batch is applied, and the
shard goes on. Through the public entry points: ``ddbcdc migrate``, ``ddbcdc apply`` and
the shard processor as the KCL daemon runs it (``processor_command()``).
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import string
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from change_records import record
from ddbcdc.worker.daemon import processor_command

ROOT = Path(__file__).resolve().parents[2]
DDBCDC = str(Path(sys.executable).parent / "ddbcdc")
US = 1_700_000_000_000_000
SHARD = "shardId-000000000007"

MAPPINGS: dict[str, dict[str, Any]] = {
    "wide": {
        "source_table": "wide",
        "target_table": "wide",
        "key": ["pk", "sk"],
        "columns": [
            {"name": "pk", "type": "text"},
            {"name": "sk", "type": "text"},
            {"name": "note", "type": "text"},
        ],
    },
    "skeys": {
        "source_table": "skeys",
        "target_table": "skeys",
        "key": ["id"],
        "columns": [{"name": "id", "type": "bigint"}, {"name": "note", "type": "text"}],
    },
    "nkeys": {
        "source_table": "nkeys",
        "target_table": "nkeys",
        "key": ["code"],
        "columns": [{"name": "code", "type": "text"}, {"name": "note", "type": "text"}],
    },
}


@pytest.fixture
def env(
    fresh_database: Callable[..., AbstractContextManager[str]], tmp_path: Path
) -> Iterator[dict[str, str]]:
    """A database migrated by ``ddbcdc migrate`` for customers and the mappings above."""
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    shutil.copy(ROOT / "schemas" / "tables" / "customers.json", mappings)
    for name, doc in MAPPINGS.items():
        (mappings / f"{name}.json").write_text(json.dumps(doc))
    with fresh_database("t_refused") as url:
        environ = {**os.environ, "DATABASE_URL": url, "DDBCDC_MAPPINGS_DIR": str(mappings)}
        environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        done = subprocess.run(
            [DDBCDC, "migrate"], env=environ, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
        yield environ


def sql(env: dict[str, str], query: str) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(env["DATABASE_URL"])
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(sa.text(query)).all()]
    engine.dispose()
    return rows


def apply(
    env: dict[str, str], lines: list[bytes], tmp_path: Path
) -> tuple[int, dict[str, Any], str]:
    path = tmp_path / "changes.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    done = subprocess.run(
        [DDBCDC, "--log-level", "INFO", "apply", str(path), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    summary = json.loads(done.stdout) if done.stdout.strip() else {}
    return done.returncode, summary, done.stderr


def processor(env: dict[str, str], batch: list[tuple[int, bytes]]) -> tuple[list[Any], str]:
    """Run the shard processor entry point on one batch; what it wrote to stdout, stderr."""
    last = str(batch[-1][0])
    actions = [
        {
            "action": "initialize",
            "shardId": SHARD,
            "sequenceNumber": "TRIM_HORIZON",
            "subSequenceNumber": 0,
        },
        {
            "action": "processRecords",
            "millisBehindLatest": 0,
            "records": [
                {
                    "action": "record",
                    "data": base64.b64encode(data).decode(),
                    "partitionKey": f"pk{seq}",
                    "sequenceNumber": str(seq),
                    "subSequenceNumber": None,
                    "approximateArrivalTimestamp": 1_700_000_000_000,
                }
                for seq, data in batch
            ],
        },
        {"action": "checkpoint", "sequenceNumber": last, "subSequenceNumber": None},
        {"action": "shutdownRequested"},
    ]
    done = subprocess.run(
        processor_command().split(" "),
        input="".join(json.dumps(a) + "\n" for a in actions),
        env={**env, "DDBCDC_APPLICATION_NAME": "refused"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()], done.stderr


def wide(pk: str, sk: str, us: int, note: str = "n") -> bytes:
    return record(
        "INSERT", {"pk": pk, "sk": sk}, us, image={"note": note}, eid=f"w{us}", table="wide"
    )


def incompressible(size: int, seed: int) -> str:
    """Text PostgreSQL cannot compress below the btree limit (no repeats for pglz)."""
    rng = random.Random(seed)
    return "".join(rng.choices(string.ascii_letters + string.digits, k=size))


def test_a_key_over_the_btree_limit_is_a_dead_letter_and_the_shard_goes_on(
    env: dict[str, str],
) -> None:
    big = wide(incompressible(2048, 1), incompressible(1024, 2), US + 1)  # DynamoDB's maxima
    batch = [(501, wide("a", "1", US)), (502, big), (503, wide("b", "2", US + 2))]
    sent, stderr = processor(env, batch)
    assert {"action": "checkpoint", "sequenceNumber": "503", "subSequenceNumber": None} in sent
    assert sql(env, "SELECT pk, sk FROM wide ORDER BY pk") == [("a", "1"), ("b", "2")]
    [(stage, error, shard, seq, payload)] = sql(
        env,
        "SELECT stage, error, shard_id, sequence_number, payload FROM ddbcdc_dead_letters",
    )
    assert (stage, shard, seq, bytes(payload)) == ("apply", SHARD, "502", big)
    assert "SQLSTATE 54000" in error and "ProgramLimitExceeded" in error
    assert big[:60].decode() not in error and incompressible(40, 1) not in stderr


def test_newest_change_refused_older_one_still_applied(env: dict[str, str], tmp_path: Path) -> None:
    engine = sa.create_engine(env["DATABASE_URL"])
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "ALTER TABLE customers ADD CONSTRAINT no_secret CHECK (first_name <> 'SECRET-42')"
            )
        )
    engine.dispose()
    key = {"userid": 1}
    lines = [
        record("INSERT", key, US, image={"first_name": "good"}, eid="a"),
        record("MODIFY", key, US + 1, image={"first_name": "SECRET-42"}, eid="b"),
        record("INSERT", {"userid": 2}, US, image={"first_name": "other"}, eid="c"),
    ]
    code, summary, stderr = apply(env, lines, tmp_path)
    assert code == 1 and summary["dead_lettered"] == 1, stderr
    assert summary["received"] == summary["upserted"] + summary["stale"] + 1
    assert sql(env, "SELECT userid, first_name FROM customers ORDER BY 1") == [
        (1, "good"),
        (2, "other"),
    ]
    [(error,)] = sql(env, "SELECT error FROM ddbcdc_dead_letters")
    assert "SQLSTATE 23514" in error and "no_secret" in error
    # The constraint's message and detail quote the row: neither reaches the text nor logs.
    assert "SECRET" not in error and "SECRET" not in stderr
    logged = sql(env, "SELECT _ddbcdc_event_id FROM ddbcdc_changes__customers ORDER BY 1")
    assert logged == [("a",), ("c",)]  # the refused change is a dead letter, not logged


def test_string_keys_that_would_share_a_row_are_poison(env: dict[str, str], tmp_path: Path) -> None:
    def s(event: str, text: str, us: int) -> bytes:
        image = {"note": text} if event != "REMOVE" else None
        return record(event, {"id": text}, us, image=image, eid=f"s{us}", table="skeys")

    lines = [s("INSERT", "7", US), s("INSERT", "07", US + 1), s("INSERT", " 7", US + 2)]
    lines += [s("INSERT", "+7", US + 3), s("REMOVE", "007", US + 4)]
    code, summary, _ = apply(env, lines, tmp_path)
    assert code == 1 and (summary["upserted"], summary["dead_lettered"]) == (1, 4)
    assert sql(env, "SELECT id, note FROM skeys") == [(7, "7")]
    errors = sql(env, "SELECT DISTINCT stage, error_path FROM ddbcdc_dead_letters")
    assert errors == [("cleanse", "dynamodb.NewImage.id")] or sorted(errors) == sorted(
        [("cleanse", "dynamodb.NewImage.id"), ("cleanse", "dynamodb.Keys.id")]
    )


def test_numerically_equal_number_keys_are_one_text_key(
    env: dict[str, str], tmp_path: Path
) -> None:
    def n(number: str, us: int) -> bytes:
        dynamo = {"Keys": {"code": {"N": number}}, "NewImage": {"code": {"N": number}}}
        doc = json.loads(record("INSERT", {"code": 0}, us, eid=f"n{us}", table="nkeys"))
        doc["dynamodb"].update(dynamo)
        return json.dumps(doc).encode()

    lines = [n("7.10", US), n("7.1", US + 1), n("1E+2", US + 2), n("100", US + 3), n("-0", US + 4)]
    code, summary, _ = apply(env, lines, tmp_path)
    assert code == 0, summary
    assert sorted(sql(env, "SELECT code FROM nkeys")) == [("0",), ("100",), ("7.1",)]


def test_text_postgresql_cannot_hold_never_fails_the_dead_letter_write(
    env: dict[str, str], tmp_path: Path
) -> None:
    good = record("INSERT", {"userid": 5}, US, image={"first_name": "fine"}, eid="g")
    nul_name = json.loads(record("INSERT", {"userid": 6}, US, eid="nul"))
    nul_name["dynamodb"]["NewImage"]["a\u0000b"] = {"N": "not a number"}
    surrogate = record("INSERT", {"userid": 8}, US, image={"first_name": "x"}, eid="sur")
    surrogate = surrogate.replace(b'"S":"x"', b'"S":"\\ud800"')
    bad_name = surrogate.replace(b'"first_name":{"S":"\\ud800"}', b'"\\udfff":{"N":"bad"}')
    lines = [good, json.dumps(nul_name).encode(), surrogate, bad_name]
    code, summary, _ = apply(env, lines, tmp_path)
    assert code == 1 and (summary["upserted"], summary["dead_lettered"]) == (1, 3)
    letters = sql(env, "SELECT stage, error, error_path FROM ddbcdc_dead_letters ORDER BY id")
    assert letters[0][0] == "decode" and letters[0][2] == "dynamodb.NewImage.a\\x00b.N"
    # JSON with a lone surrogate is not valid UTF-8 text: refused as it is read.
    assert [x[:2] for x in letters[1:]] == [("decode", "payload is not valid JSON")] * 2
    assert sql(env, "SELECT userid FROM customers") == [(5,)]


def test_a_mapping_that_would_merge_keys_stops_migrate_naming_file_and_field(
    env: dict[str, str],
) -> None:
    folder = Path(env["DDBCDC_MAPPINGS_DIR"])
    doc = dict(MAPPINGS["skeys"], columns=[{"name": "id", "type": "text", "rules": ["trim"]}])
    (folder / "skeys.json").write_text(json.dumps(doc))
    done = subprocess.run([DDBCDC, "migrate"], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert str(folder / "skeys.json") in done.stderr and "'columns[0].rules'" in done.stderr


def test_a_number_with_thousands_of_leading_zeros_applies(
    env: dict[str, str], tmp_path: Path
) -> None:
    doc = json.loads(record("INSERT", {"userid": 9}, US, image={"first_name": "z"}, eid="zeros"))
    doc["dynamodb"]["NewImage"]["phone"] = {"N": "0" * 5000 + "12345678901234567890"}
    code, summary, _ = apply(env, [json.dumps(doc).encode()], tmp_path)
    assert (code, summary["upserted"]) == (0, 1)
    assert sql(env, "SELECT phone FROM customers") == [("12345678901234567890",)]


@pytest.mark.parametrize("percent", [2, 20])
def test_isolating_a_batch_takes_a_few_statements_whatever_is_refused(
    env: dict[str, str], percent: int
) -> None:
    """A batch of 2,000 changes with 2% or 20% of them refused by a constraint: a few
    statements, not some per refused key (each on a stage that grows with every attempt)."""
    from ddbcdc.pipeline import Pipeline, SourceRecord
    from ddbcdc.schema.mapping import load_mappings

    engine = sa.create_engine(env["DATABASE_URL"])
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE customers ADD CONSTRAINT no_bad CHECK (phone <> '0')"))
    pipeline = Pipeline(engine=engine, mappings=load_mappings(Path(env["DDBCDC_MAPPINGS_DIR"])))
    every = 100 // percent
    records = [
        SourceRecord(
            record("INSERT", {"userid": k}, US + k, image={"phone": k % every}, eid=f"i{k}"),
            SHARD,
            str(k),
        )
        for k in range(1, 2001)
    ]
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    result = pipeline.process(records)
    pipeline.close()
    assert (result.upserted, result.dead_lettered) == (2000 - 2000 // every, 2000 // every)
    assert sum(s.startswith("SAVEPOINT") for s in statements) <= 4
    assert len(statements) <= 40, len(statements)
    assert sql(env, "SELECT count(*) FROM customers") == [(2000 - 2000 // every,)]
