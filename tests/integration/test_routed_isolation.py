"""Isolating the changes PostgreSQL refuses in a routed mapping's batch, on a real PostgreSQL:
a batch of many keys is screened inside PostgreSQL first, then applied by the routed writer's
own statements, and ends exactly as halving it in savepoints does (every table, versions row,
change-log row and dead letter alike) in few savepoints."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest
import sqlalchemy as sa

from ddbcdc.materialize import bisection
from ddbcdc.pipeline import Pipeline, SourceRecord
from shop_records import SHOP_TABLES, image, record, shop_mapping, table_state, versions_state

SHOP = shop_mapping(logged=True)
US = 1_700_000_000_000_000
#: Orders of 80 customers, profiles of 20, lines of 20 orders, and unmatched keys.
KEYS = (
    [(f"CUSTOMER#{n}", f"ORDER#2024-05-{n % 28 + 1:02d}#{n}") for n in range(1, 81)]
    + [(f"CUSTOMER#{n}", "PROFILE") for n in range(1, 21)]
    + [(f"ORDER#{n}", "LINE#1") for n in range(1, 21)]
    + [(f"CUSTOMER#0{n}", "PROFILE") for n in range(1, 6)]
)
#: An order whose status ends in 1, 3 or 7 is refused (values are the history's serials).
CHECK = "ALTER TABLE shop_orders ADD CONSTRAINT no_bad CHECK (status !~ '[137]$')"


@pytest.fixture(scope="module")
def engine(fresh_database: Callable[..., AbstractContextManager[str]]) -> Iterator[sa.Engine]:
    with fresh_database("t_routed_iso", mappings=(SHOP,)) as url:
        made = sa.create_engine(url)
        with made.begin() as conn:
            conn.execute(sa.text(CHECK))
        yield made
        made.dispose()


def _history(seed: int, steps: int) -> list[bytes]:
    """Inserts, modifies (orders becoming carts and back: moves), removes and reinserts of
    :data:`KEYS`, several in a microsecond; the value of change n is ``v<n>``."""
    rng = random.Random(seed)
    alive = dict.fromkeys(KEYS, False)
    us, out = US, []
    for serial in range(steps):
        us += rng.choice((0, 1, 7))
        key = rng.choice(KEYS)
        remove = alive[key] and rng.random() < 0.2
        event = "REMOVE" if remove else ("MODIFY" if alive[key] else "INSERT")
        entity = rng.choice(("order", "cart")) if key[1].startswith("ORDER#") else "thing"
        item = None if remove else image(key, entity, f"v{serial}")
        out.append(record(event, key, us, eid=f"e{serial:06d}", item=item))
        alive[key] = not remove
    return out


def _clear(engine: sa.Engine) -> None:
    logs = [f"ddbcdc_changes__{t}" for t in SHOP_TABLES]
    with engine.begin() as conn:
        names = ", ".join([*SHOP_TABLES, *logs, "ddbcdc_versions__shop", "ddbcdc_dead_letters"])
        conn.execute(sa.text(f"TRUNCATE {names}"))


def _outcome(engine: sa.Engine) -> tuple[Any, ...]:
    with engine.connect() as conn:
        logs = {
            t: sorted(
                conn.execute(sa.text(f"SELECT _ddbcdc_event_id FROM ddbcdc_changes__{t}"))
                .scalars()
                .all()
            )
            for t in SHOP_TABLES
        }
        letters = conn.execute(
            sa.text("SELECT stage, error, payload FROM ddbcdc_dead_letters ORDER BY payload")
        ).all()
        return table_state(conn), versions_state(conn), logs, [tuple(r) for r in letters]


def _run(engine: sa.Engine, records: list[bytes]) -> tuple[tuple[Any, ...], int, int]:
    """The outcome of one batch of ``records``, savepoints taken, changes dead-lettered."""
    _clear(engine)
    savepoints = 0

    def count(*_: object) -> None:
        nonlocal savepoints
        savepoints += 1

    sa.event.listen(engine, "savepoint", count)
    try:
        result = Pipeline(engine=engine, mappings=[SHOP]).process(
            [SourceRecord(r) for r in records]
        )
    finally:
        sa.event.remove(engine, "savepoint", count)
    return _outcome(engine), savepoints, result.dead_lettered


@pytest.mark.parametrize("seed", [1, 2])
def test_a_screened_routed_batch_ends_as_halving_it_in_few_savepoints(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    records = _history(seed, 600)
    screened, savepoints, dead = _run(engine, records)
    monkeypatch.setattr(bisection, "SCREENED", len(KEYS) + 1, raising=False)  # halving
    halved, halving, _ = _run(engine, records)
    assert dead >= 5, "the history must have refused changes"
    assert screened == halved
    # Halving takes several savepoints per refused key; the screen a few (its change, the
    # older one that applies, the log of those it supersedes).
    assert savepoints <= 6 * dead + 10 < halving, (savepoints, halving, dead)
