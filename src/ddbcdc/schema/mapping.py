"""Table mappings: ``schemas/tables/*.json`` -> :class:`TableMapping`, validated at start-up.

A mapping declares one DynamoDB source table and the PostgreSQL table it is copied into::

    {
      "source_table": "customers",          # DynamoDB table name (tableName of the records)
      "target_table": "customers",          # PostgreSQL table (lower-case identifier)
      "key": ["userid"],                    # target column names forming the primary key
      "change_log": false,                  # keep an append-only log of every change too
      "extra": {"column": "attributes"},    # keep unmapped attributes in a jsonb column
      "columns": [
        {"name": "userid", "source": "userid", "type": "bigint", "required": true},
        {"name": "phone", "type": "text", "rules": ["digits_only"], "default": null}
      ]
    }

``source`` defaults to ``name``. ``required`` defaults to false (the column is nullable);
``default`` is used when the attribute is absent (or empty after the rules). Key columns are
always required, and must keep distinct DynamoDB items distinct: they take no rules, no
default, and only the types whose conversion is exact (:data:`KEY_TYPES`). Anything unknown,
missing or malformed raises :class:`ConfigurationError` naming the file and the field, so a
bad mapping stops the process before it reads a record.

``extra`` keeps what the columns do not name: ``"column"`` is a ``jsonb`` column holding every
attribute of a live row that no column maps, ``"item_column"`` one holding the whole item
(either or both), in the lossless encoding of :mod:`ddbcdc.decode.itemjson`. ``inferred`` is left
to the reader (``ddbcdc mapping infer`` writes what it saw there); it is not part of the
mapping (:func:`mapping_document`). ``deletes`` and ``ttl_deletes`` are
:mod:`ddbcdc.schema.deletes`; a document holds them only when they are not the defaults, so
the digest of a mapping written before they existed is unchanged. A routed mapping deletes
hard (its documents have neither).

A mapping with ``routes`` copies one table into several (single-table designs): see
:mod:`ddbcdc.schema.routes`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from ddbcdc.errors import ConfigurationError
from ddbcdc.schema.deletes import parse_policy
from ddbcdc.schema.model import (
    CHANGE_LOG_PREFIX,
    COLUMN_TYPES,
    KEY_TYPES,
    MAX_TARGET,
    RESERVED_PREFIX,
    RULES,
    VERSIONS_PREFIX,
    ColumnMapping,
    Route,
    TableMapping,
    Template,
    column_document,
    fail,
    identifier,
    parse_column,
    parse_extra,
    parse_flag,
    table_differences,
    unique_columns,
    unknown_fields,
    without_change_log,
)
from ddbcdc.schema.routes import parse_routed, routed_differences, routed_document

__all__ = [
    "CHANGE_LOG_PREFIX",
    "COLUMN_TYPES",
    "KEY_TYPES",
    "RESERVED_PREFIX",
    "RULES",
    "VERSIONS_PREFIX",
    "ColumnMapping",
    "Route",
    "TableMapping",
    "Template",
    "check_table_key",
    "load_mapping",
    "load_mappings",
    "mapping_differences",
    "mapping_digest",
    "mapping_document",
    "parse_mapping",
    "without_change_log",
]

_TABLE_FIELDS = frozenset(
    {"source_table", "target_table", "key", "change_log", "columns", "extra", "inferred"}
    | {"deletes", "ttl_deletes"}
)


def parse_mapping(raw: Any, *, name: str, where: str | None = None) -> TableMapping:
    """Validate one mapping document (already parsed JSON): plain, or routed when it has
    ``routes`` (:mod:`ddbcdc.schema.routes`).

    Args:
        raw: the parsed JSON object.
        name: the mapping's name (the file stem).
        where: how to name the mapping in errors (default: ``name``).

    Raises:
        ConfigurationError: naming the field that is wrong.
    """
    where = where or name
    if not isinstance(raw, Mapping):
        raise fail(where, "<root>", "must be a JSON object")
    if "routes" in raw:
        return parse_routed(raw, name=name, where=where)
    unknown_fields(where, "<root>", raw.keys(), _TABLE_FIELDS)
    source_table = raw.get("source_table")
    if not isinstance(source_table, str) or not source_table:
        raise fail(where, "source_table", "must be a non-empty string")
    target = identifier(where, "target_table", raw.get("target_table"), max_len=MAX_TARGET)
    key_raw = raw.get("key")
    if not isinstance(key_raw, list) or not key_raw or not all(isinstance(k, str) for k in key_raw):
        raise fail(where, "key", "must be a non-empty list of column names")
    key = tuple(key_raw)
    columns_raw = raw.get("columns")
    if not isinstance(columns_raw, list) or not columns_raw:
        raise fail(where, "columns", "must be a non-empty list")
    columns = tuple(
        parse_column(where, f"columns[{i}]", c, set(key)) for i, c in enumerate(columns_raw)
    )
    unique_columns(where, columns)
    names = [c.name for c in columns]
    missing = [k for k in key if k not in names]
    if missing or len(set(key)) != len(key):
        raise fail(where, "key", f"key column(s) {missing or list(key)} missing or repeated")
    change_log = parse_flag(where, "change_log", raw.get("change_log", False))
    extra_column, item_column = parse_extra(where, raw.get("extra"), names)
    policy = parse_policy(raw, lambda field, message: fail(where, field, message))
    return TableMapping(
        name=name,
        source_table=source_table,
        target_table=target,
        key=key,
        columns=columns,
        change_log=change_log,
        extra_column=extra_column,
        item_column=item_column,
        policy=policy,
    )


def check_table_key(mapping: TableMapping, key_names: Iterable[str], *, needs: str) -> None:
    """Refuse a mapping whose key is not the DynamoDB table's key (``key_names``, from
    DescribeTable): distinct items would become one row, or none.

    Raises:
        ConfigurationError: naming the mapping, both keys and ``needs`` (what needs them equal).
    """
    sources = [c.source for c in mapping.key_columns]
    names = sorted(key_names)
    if set(sources) != set(names):
        raise ConfigurationError(
            f"mapping {mapping.name}: key {sources} is not the key of DynamoDB table "
            f"{mapping.source_table} ({names}): {needs} needs them equal"
        )


def mapping_document(mapping: TableMapping) -> dict[str, Any]:
    """The mapping as a normalized JSON object: every field spelled out, nothing about where
    it was read from (``inferred`` and the file name are not part of it); ``deletes`` and
    ``ttl_deletes`` only when they are not the defaults."""
    if mapping.routes:
        return routed_document(mapping)
    return {
        "source_table": mapping.source_table,
        "target_table": mapping.target_table,
        "key": list(mapping.key),
        "change_log": mapping.change_log,
        "extra": {"column": mapping.extra_column, "item_column": mapping.item_column},
        "columns": [column_document(c) for c in mapping.columns],
        **mapping.policy.document(),
    }


def mapping_digest(mapping: TableMapping) -> str:
    """SHA-256 (hex) of the normalized mapping: equal digests, equal mappings."""
    text = json.dumps(mapping_document(mapping), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def mapping_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What differs between two :func:`mapping_document` objects, ``old`` to ``new``, one
    phrase each (``column 'city' added``, ``column 'phone': type 'text' -> 'numeric'``,
    ``route 'orders' added``)."""
    if "routes" in old or "routes" in new:
        return routed_differences(old, new)
    return table_differences(old, new)


def _with_path(mapping: TableMapping, path: Path) -> TableMapping:
    routes = tuple(replace(r, mapping=replace(r.mapping, path=path)) for r in mapping.routes)
    return replace(mapping, path=path, routes=routes)


def load_mapping(path: Path) -> TableMapping:
    """Load and validate one mapping file.

    Raises:
        ConfigurationError: unreadable file, bad JSON or an invalid mapping (names the file).
    """
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"table mapping {path}: cannot read JSON: {exc}") from exc
    return _with_path(parse_mapping(raw, name=path.stem, where=str(path)), path)


def _tables(mapping: TableMapping) -> list[str]:
    """Every PostgreSQL name a mapping owns (its target or name, and its routes' tables)."""
    return [mapping.target_table, *(t for t in mapping.targets if mapping.routes)]


def load_mappings(directory: Path) -> tuple[TableMapping, ...]:
    """Load every ``*.json`` mapping in ``directory``, sorted by file name.

    Raises:
        ConfigurationError: no mappings, an invalid one, or two mappings sharing a source or
            target table (a route's table included).
    """
    if not directory.is_dir():
        why = "is not a directory" if directory.exists() else "does not exist"
        raise ConfigurationError(f"table mappings directory {directory} {why}")
    mappings = tuple(load_mapping(p) for p in sorted(directory.glob("*.json")))
    if not mappings:
        raise ConfigurationError(f"no table mappings (*.json) in {directory}")
    sources: dict[str, TableMapping] = {}
    tables: dict[str, TableMapping] = {}
    for m in mappings:
        for seen, attr, values in (
            (sources, "source_table", [m.source_table]),
            (tables, "target_table", _tables(m)),
        ):
            for value in values:
                if value in seen:
                    raise ConfigurationError(
                        f"table mappings {seen[value].path} and {m.path}: same {attr} {value!r}"
                    )
                seen[value] = m
    return mappings
