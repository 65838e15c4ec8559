"""The prune floor of a routed mapping through ``ddbcdc apply``: after its tombstones were
pruned, an old change of a deleted key (a move between routes included) or of a key never
seen is dead-lettered as below the floor, never resurrected, also in a batch whose refused
values are being isolated; keys with a version take their old changes as ever."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa

from ddbcdc.decode.attributes import marshal
from ddbcdc.materialize import REFUSED_BELOW_FLOOR
from ddbcdc.materialize.progress import register_shards
from ddbcdc.pipeline import Pipeline, ShardPosition, SourceRecord
from export_fixtures import full_lines, write_export
from shop_records import SHOP_FILE, image, record, shop_mapping, table_state

SHOP = shop_mapping()
T0 = 1_690_000_000_000_000  # mid-2023, in stream time
NOW = T0 + 400 * 86_400_000_000  # the worker is over a year later
_seq = itertools.count(1000)


def order(n: int) -> tuple[str, str]:
    return (f"CUSTOMER#{n}", f"ORDER#2023-07-{n % 28 + 1:02d}#{n}")


@pytest.fixture
def db(fresh_database: Callable[..., AbstractContextManager[str]]) -> Iterator[str]:
    with fresh_database("t_prune_routed", mappings=(SHOP,)) as url:
        yield url


@pytest.fixture
def pipeline(db: str) -> Iterator[Pipeline]:
    p = Pipeline(
        engine=sa.create_engine(db),
        mappings=[SHOP],
        tombstone_horizon=timedelta(days=1),
        prune_every=timedelta(days=365),  # the test prunes when it says so
    )
    yield p
    p.close()


def _advance(p: Pipeline, us: int) -> None:
    """Shard s1 applies a batch whose newest change is at ``us`` (the worker listed it)."""
    key = ("CUSTOMER#999999", "PROFILE")
    change = record("MODIFY", key, us, eid=f"pos-{next(_seq)}", item=image(key, "c", "pos"))
    p.process([SourceRecord(change, shard_id="s1")], position=ShardPosition("app", "s1", "1"))
    with p.engine.begin() as conn:
        register_shards(conn, "app", {"s1"})


def _apply(db: str, path: Path) -> dict[str, object]:
    env = {**os.environ, "DATABASE_URL": db, "DDBCDC_MAPPINGS_DIR": str(SHOP_FILE.parent)}
    env["DDBCDC_TOMBSTONE_HORIZON"] = "PT1H"
    done = subprocess.run(
        [sys.executable, "-m", "ddbcdc.cli", "apply", str(path), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr
    result: dict[str, object] = orjson.loads(done.stdout)
    return result


def test_old_changes_of_pruned_routed_keys_are_refused_never_resurrected(
    db: str, pipeline: Pipeline, tmp_path: Path
) -> None:
    removed, alive, unseen, poisoned = range(1, 21), range(21, 41), range(41, 51), range(51, 56)
    history = [
        record("INSERT", order(n), T0, eid=f"i{n}", item=image(order(n), "order", f"o{n}"))
        for n in [*removed, *alive, *poisoned]
    ]
    history += [record("REMOVE", order(n), T0 + 10, eid=f"r{n}") for n in removed]
    assert pipeline.process([SourceRecord(r) for r in history]).dead_lettered == 0
    _advance(pipeline, NOW)
    pipeline.prune_tombstones()
    with pipeline.engine.begin() as conn:
        versions = conn.execute(sa.text("SELECT count(*) FROM ddbcdc_versions__shop")).scalar()
        assert versions == len(alive) + len(poisoned) + 1  # the tombstones are gone
        conn.execute(
            sa.text("ALTER TABLE shop_orders ADD CONSTRAINT no_bad CHECK (status <> 'bad')")
        )

    def modify(n: int, entity: str, value: str) -> bytes:
        return record("MODIFY", order(n), T0 + 5, eid=f"m{n}", item=image(order(n), entity, value))

    late = [modify(n, "cart" if n % 2 else "order", f"late{n}") for n in removed]
    late += [modify(n, "order", f"new{n}") for n in alive]
    late += [modify(n, "order", f"new{n}") for n in unseen]
    late += [modify(n, "order", "bad") for n in poisoned]
    path = tmp_path / "late.jsonl"
    path.write_bytes(b"\n".join(late) + b"\n")
    result = _apply(db, path)

    with pipeline.engine.connect() as conn:
        tables = table_state(conn)
        letters = {
            orjson.loads(payload)["eventID"]: error
            for payload, error in conn.execute(
                sa.text("SELECT payload, error FROM ddbcdc_dead_letters")
            )
        }
    below = {f"m{n}" for n in [*removed, *unseen]}
    assert {e for e, why in letters.items() if why == REFUSED_BELOW_FLOOR} == below
    assert {e for e in letters if e not in below} == {f"m{n}" for n in poisoned}
    assert result["dead_lettered"] == len(below) + len(poisoned)
    assert tables["shop_unmatched"] == {}  # no removed order came back as a cart
    expected = {(n, n % 28 + 1, n): f"new{n}" for n in alive}
    expected |= {(n, n % 28 + 1, n): f"o{n}" for n in poisoned}
    found = {(k[0], k[1].day, k[2]): v for k, v in tables["shop_orders"].items()}
    assert found == expected


def test_an_old_export_of_a_routed_table_after_a_prune_is_refused(
    db: str, pipeline: Pipeline, tmp_path: Path
) -> None:
    history = [record("INSERT", order(1), T0, eid="i1", item=image(order(1), "order", "o1"))]
    history.append(record("REMOVE", order(1), T0 + 10, eid="r1"))
    pipeline.process([SourceRecord(r) for r in history])
    _advance(pipeline, NOW)
    pipeline.prune_tombstones()
    item = marshal({**image(order(1), "order", "old"), "PK": order(1)[0], "SK": order(1)[1]})
    folder = write_export(
        tmp_path / "export",
        {"only.json.gz": full_lines([item])},
        export_id="01690000000005-aaaa0001",
        table="shop",
        export_time_us=T0 + 5_000_000,
    )
    env = {**os.environ, "DATABASE_URL": db, "DDBCDC_MAPPINGS_DIR": str(SHOP_FILE.parent)}
    env |= {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    command = [sys.executable, "-m", "ddbcdc.cli", "snapshot", "--from-export", str(folder)]
    done = subprocess.run(
        [*command, "--table", "shop", "--force", "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "at or below the tombstone prune floor" in done.stderr
    assert "Traceback" not in done.stderr
    with pipeline.engine.connect() as conn:
        assert table_state(conn)["shop_orders"] == {}


def test_a_pending_dead_letter_of_a_route_keeps_the_tombstones_its_replay_needs(
    db: str, pipeline: Pipeline, tmp_path: Path
) -> None:
    """A change a route's columns refused is named by the route's table; it holds the routed
    mapping's pruning all the same, so its replay after ``migrate`` fixed the mapping finds
    the newer delete (and is superseded by it), instead of meeting the floor."""
    key, day = order(1), 86_400_000_000
    steps = [
        record("INSERT", key, T0 - 20 * day, eid="i1", item=image(key, "order", "o1")),
        record(
            "MODIFY",
            key,
            T0 - 10 * day,
            eid="m1",
            item={**image(key, "order", "o2"), "total": "n/a"},
        ),
        record("REMOVE", key, T0 - 5 * day, eid="r1"),
    ]
    assert [pipeline.process([SourceRecord(r)]).dead_lettered for r in steps] == [0, 1, 0]
    _advance(pipeline, NOW)
    pipeline.prune_tombstones()

    doc = orjson.loads(SHOP_FILE.read_bytes())  # the fix: a total may be text
    doc["routes"][1]["columns"][4]["type"] = "text"
    (tmp_path / "fixed").mkdir()
    (tmp_path / "fixed" / "shop.json").write_bytes(orjson.dumps(doc))
    env = {**os.environ, "DATABASE_URL": db, "DDBCDC_MAPPINGS_DIR": str(tmp_path / "fixed")}
    for command in (["migrate", "--allow-destructive"], ["dlq", "replay"]):
        done = subprocess.run(
            [sys.executable, "-m", "ddbcdc.cli", *command],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    assert "stale 1); still failing 0" in done.stdout  # superseded by the delete
    with pipeline.engine.connect() as conn:
        assert table_state(conn)["shop_orders"] == {}
        pending = "SELECT count(*) FROM ddbcdc_dead_letters WHERE replayed_at IS NULL"
        assert conn.execute(sa.text(pending)).scalar() == 0


def test_the_floor_survives_a_downgrade_below_it_and_back(
    db: str, pipeline: Pipeline, tmp_path: Path
) -> None:
    """Down to base and up again keeps a routed mapping's versions table, and so its floor:
    an old change of a key whose delete was pruned is still refused, never resurrected."""
    key, day = order(1), 86_400_000_000
    for step in (
        record("INSERT", key, T0 - 20 * day, eid="i1", item=image(key, "order", "o1")),
        record("REMOVE", key, T0 - 5 * day, eid="r1"),
    ):
        pipeline.process([SourceRecord(step)])
    _advance(pipeline, NOW)
    assert pipeline.prune_tombstones() == 1
    env = {**os.environ, "DATABASE_URL": db, "DDBCDC_MAPPINGS_DIR": str(SHOP_FILE.parent)}
    for command in (["--downgrade", "base"], []):
        done = subprocess.run(
            [sys.executable, "-m", "ddbcdc.cli", "migrate", *command],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    late = tmp_path / "late.jsonl"
    zombie = record("MODIFY", key, T0 - 10 * day, eid="m1", item=image(key, "order", "zombie"))
    late.write_bytes(zombie + b"\n")
    assert _apply(db, late)["dead_lettered"] == 1
    with pipeline.engine.connect() as conn:
        assert table_state(conn)["shop_orders"] == {}
        error = conn.execute(sa.text("SELECT error FROM ddbcdc_dead_letters")).scalar()
    assert error == REFUSED_BELOW_FLOOR
