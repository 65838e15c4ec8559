"""The demo's second act: the mapping evolves under a table that already has the data.

During the load the items gained ``city``, an attribute the shipped mapping does not name:
the worker kept it in the ``attributes`` column. Now a ``city`` column is added to the
mapping; ``ddbcdc migrate`` plans the change (printed as a dry run first), adds the column,
fills it from the kept attributes through the column's rules and records the new mapping
version, after which a writer with the old mapping refuses to start. PostgreSQL must then
equal a Scan of the DynamoDB table under the new mapping.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import sqlalchemy as sa

from ddbcdc.decode.itemjson import decode_attributes
from ddbcdc.decode.render import to_jsonable
from ddbcdc.errors import ConfigurationError
from ddbcdc.migrate.run import format_plan, migrate
from ddbcdc.migrate.versions import check_engine
from ddbcdc.schema.mapping import TableMapping, load_mapping, mapping_document
from ddbcdc.schema.tables import mapped_tables
from ddbcdc.verify.compare import compare

__all__ = ["NEW_ATTRIBUTE", "evolve", "print_samples"]

#: The attribute the demo's items gain mid-run.
NEW_ATTRIBUTE = "city"


def _evolved(mapping: TableMapping, directory: Path) -> TableMapping:
    document = mapping_document(mapping)
    document["columns"].append({"name": NEW_ATTRIBUTE, "type": "text", "rules": ["trim"]})
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{mapping.name}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    return load_mapping(path)


def _kept_count(engine: sa.Engine, mapping: TableMapping) -> int:
    live = mapped_tables([mapping])[mapping.target_table].live
    assert mapping.extra_column is not None
    holds = live.c[mapping.extra_column].has_key(NEW_ATTRIBUTE)
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).where(holds)).scalar_one())


def evolve(
    dynamodb: Any,
    engine: sa.Engine,
    mapping: TableMapping,
    log_dir: Path,
    *,
    say: Callable[[str], None],
    out: TextIO,
) -> int:
    """Add the column, migrate, compare again: 0 when PostgreSQL matches DynamoDB."""
    if mapping.extra_column is None:
        say("the mapping keeps no unmapped attributes: nothing to evolve")
        return 0
    kept = _kept_count(engine, mapping)
    say(f"{kept} rows keep {NEW_ATTRIBUTE!r} in {mapping.extra_column!r}; the mapping gains it")
    evolved = _evolved(mapping, log_dir / "mappings")
    print(format_plan(migrate(engine, [evolved], dry_run=True)), file=out)
    say("ddbcdc migrate: add the column, fill it from the kept attributes")
    result = migrate(engine, [evolved])
    for report in result.backfills:
        say(
            f"backfilled {report.rows} rows: {report.filled} filled, "
            f"{report.dead_lettered} dead letters"
        )
    try:
        check_engine(engine, [mapping])
        say("a writer with the old mapping was not refused")
        return 1
    except ConfigurationError as exc:
        say(f"a writer with the old mapping now refuses to start: {exc}")
    comparison = compare(dynamodb, engine, evolved)
    if not comparison.matches or result.problems:
        print(f"\nMISMATCH after the mapping change: {comparison} {result.problems}", file=out)
        return 1
    print("\nSample rows after the mapping change:", file=out)
    print_samples(dynamodb, engine, evolved, out)
    print(f"\nPostgreSQL matches DynamoDB with the new column {NEW_ATTRIBUTE!r}.", file=out)
    return 0


def print_samples(
    dynamodb: Any, engine: sa.Engine, mapping: TableMapping, out: TextIO, count: int = 3
) -> None:
    """A few items next to their rows (kept attributes decoded), the ones with
    :data:`NEW_ATTRIBUTE` first."""
    live = mapped_tables([mapping])[mapping.target_table].live
    kept = {mapping.extra_column, mapping.item_column} - {None}
    names = list(mapping.stored_columns)
    columns = [sa.cast(live.c[n], sa.Text).label(n) if n in kept else live.c[n] for n in names]
    order: list[Any] = []
    if NEW_ATTRIBUTE in live.c:
        order.append(live.c[NEW_ATTRIBUTE].is_(None))
    elif mapping.extra_column is not None:
        holds = live.c[mapping.extra_column].has_key(NEW_ATTRIBUTE)
        order.append(sa.case((holds, 0), else_=1))
    query = sa.select(*columns).order_by(*order, *[live.c[k] for k in mapping.key]).limit(count)
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(query).mappings()]
    for row in rows:
        key = {k: row[k] for k in mapping.key}
        item = dynamodb.get_item(
            TableName=mapping.source_table,
            Key={name: {"N": str(value)} for name, value in key.items()},
        ).get("Item", {})
        for name in kept:
            if row[name] is not None:
                row[name] = decode_attributes(row[name])
        print(f"  DynamoDB   {item}", file=out)
        print(f"  PostgreSQL {to_jsonable(row)}", file=out)
