"""Table mappings: ``schemas/tables/*.json`` -> :class:`TableMapping`, validated at start-up.

A mapping declares one DynamoDB source table and the PostgreSQL table it is copied into::

    {
      "source_table": "customers",          # DynamoDB table name (tableName of the records)
      "target_table": "customers",          # PostgreSQL table (lower-case identifier)
      "key": ["userid"],                    # target column names forming the primary key
      "change_log": false,                  # keep an append-only log of every change too
      "extra": {"column": "attributes"},    # keep unmapped attributes in a jsonb column
      "deletes": "hard",                    # a REMOVE's row: "hard" or "soft" (kept, marked)
      "ttl_deletes": "delete",              # a TTL expiry's: as deletes, "soft" or "keep"
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
the digest of a mapping written before they existed is unchanged.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ddbcdc.errors import ConfigurationError
from ddbcdc.schema.deletes import DEFAULT_POLICY, DeletePolicy, parse_policy

__all__ = [
    "COLUMN_TYPES",
    "KEY_TYPES",
    "RULES",
    "ColumnMapping",
    "TableMapping",
    "load_mapping",
    "load_mappings",
    "mapping_differences",
    "mapping_digest",
    "mapping_document",
    "parse_mapping",
]

#: PostgreSQL column types a mapping may use.
COLUMN_TYPES: frozenset[str] = frozenset(
    {"bigint", "integer", "smallint", "numeric", "text", "boolean", "bytea", "jsonb", "timestamptz"}
)
#: Cleanse rules a column may list, applied in order to text values.
RULES: frozenset[str] = frozenset({"trim", "lowercase", "uppercase", "digits_only"})
#: Types a key column may have: those that map distinct DynamoDB key values (S, N, B) to
#: distinct PostgreSQL values. Not jsonb (equal maps in another attribute order), timestamptz
#: (equal instants in other notations) or boolean (never a DynamoDB key type).
KEY_TYPES: frozenset[str] = frozenset({"bigint", "integer", "smallint", "numeric", "text", "bytea"})

#: Prefix of every bookkeeping table and column; mapped names may not use it.
RESERVED_PREFIX = "_ddbcdc_"
VERSIONS_PREFIX = "ddbcdc_versions__"
CHANGE_LOG_PREFIX = "ddbcdc_changes__"

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
_MAX_IDENTIFIER = 63
#: Room for the longest derived name, the versions table's index: <prefix><target>_d_idx.
_MAX_TARGET = _MAX_IDENTIFIER - len(VERSIONS_PREFIX) - len("_d_idx") - 2
_TABLE_FIELDS = frozenset(
    {"source_table", "target_table", "key", "change_log", "columns", "extra", "inferred"}
    | {"deletes", "ttl_deletes"}
)
_EXTRA_FIELDS = frozenset({"column", "item_column"})
_COLUMN_FIELDS = frozenset({"name", "source", "type", "required", "default", "rules"})


@dataclass(frozen=True, slots=True)
class ColumnMapping:
    """One target column and where its value comes from.

    Attributes:
        name: the PostgreSQL column name.
        source: the DynamoDB attribute name.
        type: one of :data:`COLUMN_TYPES`.
        required: a missing or empty value makes the record poison.
        default: value used when the attribute is absent and the column is not required.
        rules: cleanse rules (:data:`RULES`), applied in order.
    """

    name: str
    source: str
    type: str
    required: bool = False
    default: Any = None
    rules: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TableMapping:
    """A validated mapping of one DynamoDB table onto one PostgreSQL table."""

    name: str
    source_table: str
    target_table: str
    key: tuple[str, ...]
    columns: tuple[ColumnMapping, ...]
    change_log: bool = False
    path: Path | None = None
    extra_column: str | None = None
    item_column: str | None = None
    policy: DeletePolicy = DEFAULT_POLICY

    @property
    def stored_columns(self) -> tuple[str, ...]:
        """Every column a live row gets from a change: the mapped ones, then the kept ones
        (unmapped attributes, whole item)."""
        kept = tuple(c for c in (self.extra_column, self.item_column) if c is not None)
        return (*(c.name for c in self.columns), *kept)

    @property
    def versions_table(self) -> str:
        """Name of the table holding the newest applied version of every key (live or deleted)."""
        return VERSIONS_PREFIX + self.target_table

    @property
    def change_log_table(self) -> str:
        """Name of this mapping's append-only change log table."""
        return CHANGE_LOG_PREFIX + self.target_table

    @property
    def key_columns(self) -> tuple[ColumnMapping, ...]:
        """The key columns, in key order."""
        by_name = {c.name: c for c in self.columns}
        return tuple(by_name[k] for k in self.key)


def _fail(where: str, field: str, message: str) -> ConfigurationError:
    return ConfigurationError(f"table mapping {where}: field {field!r}: {message}")


def _identifier(where: str, field: str, value: Any, *, max_len: int = _MAX_IDENTIFIER) -> str:
    if not isinstance(value, str) or not _IDENTIFIER.match(value):
        raise _fail(where, field, f"{value!r} is not a lower-case identifier ([a-z_][a-z0-9_]*)")
    if len(value) > max_len:
        raise _fail(where, field, f"{value!r} is longer than {max_len} characters")
    if value.startswith(RESERVED_PREFIX) or value.startswith("ddbcdc_"):
        raise _fail(where, field, f"{value!r} uses the reserved prefix 'ddbcdc_'")
    return value


def _unknown(where: str, field: str, given: Iterable[str], known: frozenset[str]) -> None:
    extra = sorted(set(given) - known)
    if extra:
        raise _fail(where, field, f"unknown field(s) {extra}; known: {sorted(known)}")


def _check_key_column(where: str, field: str, raw: Mapping[str, Any], type_: str) -> None:
    """Refuse what would merge distinct DynamoDB items into one row (or split one in two)."""
    if type_ not in KEY_TYPES:
        raise _fail(
            where,
            f"{field}.type",
            f"a key column cannot be {type_}: distinct DynamoDB keys could become one row "
            f"(key types: {sorted(KEY_TYPES)})",
        )
    if raw.get("rules"):
        raise _fail(
            where,
            f"{field}.rules",
            "a key column takes no rules: they would make distinct DynamoDB keys equal",
        )
    if raw.get("default") is not None:
        raise _fail(
            where, f"{field}.default", "a key column takes no default: every item has its key"
        )


def _parse_column(where: str, index: int, raw: Any, key: set[str]) -> ColumnMapping:
    field = f"columns[{index}]"
    if not isinstance(raw, Mapping):
        raise _fail(where, field, "must be an object")
    _unknown(where, field, raw.keys(), _COLUMN_FIELDS)
    name = _identifier(where, f"{field}.name", raw.get("name"))
    source = raw.get("source", name)
    if not isinstance(source, str) or not source:
        raise _fail(where, f"{field}.source", "must be a non-empty string")
    type_ = raw.get("type")
    if type_ not in COLUMN_TYPES:
        raise _fail(
            where, f"{field}.type", f"unknown type {type_!r}; known: {sorted(COLUMN_TYPES)}"
        )
    required = raw.get("required", False)
    if not isinstance(required, bool):
        raise _fail(where, f"{field}.required", "must be true or false")
    rules = raw.get("rules", [])
    if not isinstance(rules, list) or any(r not in RULES for r in rules):
        raise _fail(where, f"{field}.rules", f"{rules!r}: each rule must be one of {sorted(RULES)}")
    if rules and type_ != "text":
        raise _fail(where, f"{field}.rules", "rules apply to text columns only")
    if name in key:
        _check_key_column(where, field, raw, str(type_))
    return ColumnMapping(
        name=name,
        source=source,
        type=str(type_),
        required=required or name in key,
        default=raw.get("default"),
        rules=tuple(rules),
    )


def _parse_extra(where: str, raw: Any, names: list[str]) -> tuple[str | None, str | None]:
    if raw is None:
        return None, None
    if not isinstance(raw, Mapping) or not raw:
        raise _fail(where, "extra", 'must be an object: {"column": ..., "item_column": ...}')
    _unknown(where, "extra", raw.keys(), _EXTRA_FIELDS)
    found: list[str | None] = []
    for field in ("column", "item_column"):
        value = raw.get(field)
        if value is not None:
            value = _identifier(where, f"extra.{field}", value)
            if value in names or value in found:
                raise _fail(where, f"extra.{field}", f"{value!r} is already a column")
        found.append(value)
    return found[0], found[1]


def parse_mapping(raw: Any, *, name: str, where: str | None = None) -> TableMapping:
    """Validate one mapping document (already parsed JSON).

    Args:
        raw: the parsed JSON object.
        name: the mapping's name (the file stem).
        where: how to name the mapping in errors (default: ``name``).

    Raises:
        ConfigurationError: naming the field that is wrong.
    """
    where = where or name
    if not isinstance(raw, Mapping):
        raise _fail(where, "<root>", "must be a JSON object")
    _unknown(where, "<root>", raw.keys(), _TABLE_FIELDS)
    source_table = raw.get("source_table")
    if not isinstance(source_table, str) or not source_table:
        raise _fail(where, "source_table", "must be a non-empty string")
    target = _identifier(where, "target_table", raw.get("target_table"), max_len=_MAX_TARGET)
    key_raw = raw.get("key")
    if not isinstance(key_raw, list) or not key_raw or not all(isinstance(k, str) for k in key_raw):
        raise _fail(where, "key", "must be a non-empty list of column names")
    key = tuple(key_raw)
    columns_raw = raw.get("columns")
    if not isinstance(columns_raw, list) or not columns_raw:
        raise _fail(where, "columns", "must be a non-empty list")
    columns = tuple(_parse_column(where, i, c, set(key)) for i, c in enumerate(columns_raw))
    names = [c.name for c in columns]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise _fail(where, "columns", f"duplicate column name(s) {duplicates}")
    missing = [k for k in key if k not in names]
    if missing or len(set(key)) != len(key):
        raise _fail(where, "key", f"key column(s) {missing or list(key)} missing or repeated")
    change_log = raw.get("change_log", False)
    if not isinstance(change_log, bool):
        raise _fail(where, "change_log", "must be true or false")
    extra_column, item_column = _parse_extra(where, raw.get("extra"), names)
    policy = parse_policy(raw, lambda field, message: _fail(where, field, message))
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


def mapping_document(mapping: TableMapping) -> dict[str, Any]:
    """The mapping as a normalized JSON object: every field spelled out, nothing about where
    it was read from (``inferred`` and the file name are not part of it); ``deletes`` and
    ``ttl_deletes`` only when they are not the defaults."""
    return {
        "source_table": mapping.source_table,
        "target_table": mapping.target_table,
        "key": list(mapping.key),
        "change_log": mapping.change_log,
        "extra": {"column": mapping.extra_column, "item_column": mapping.item_column},
        "columns": [
            {
                "name": c.name,
                "source": c.source,
                "type": c.type,
                "required": c.required,
                "default": c.default,
                "rules": list(c.rules),
            }
            for c in mapping.columns
        ],
        **mapping.policy.document(),
    }


def mapping_digest(mapping: TableMapping) -> str:
    """SHA-256 (hex) of the normalized mapping: equal digests, equal mappings."""
    text = json.dumps(mapping_document(mapping), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _column_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    return [
        f"{field} {old.get(field)!r} -> {new.get(field)!r}"
        for field in ("source", "type", "required", "default", "rules")
        if old.get(field) != new.get(field)
    ]


def mapping_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What differs between two :func:`mapping_document` objects, ``old`` to ``new``, one
    phrase each (``column 'city' added``, ``column 'phone': type 'text' -> 'numeric'``)."""
    found = [
        f"{field} {old.get(field)!r} -> {new.get(field)!r}"
        for field in ("source_table", "target_table", "key", "change_log", "extra")
        if old.get(field) != new.get(field)
    ]
    policies = DeletePolicy.from_document(old), DeletePolicy.from_document(new)
    for field in ("deletes", "ttl_deletes"):
        was, now = (getattr(p, field) for p in policies)
        if was != now:
            found.append(f"{field} {was!r} -> {now!r}")
    before = {c["name"]: c for c in old.get("columns", ())}
    after = {c["name"]: c for c in new.get("columns", ())}
    found += [f"column {n!r} removed" for n in before if n not in after]
    found += [f"column {n!r} added" for n in after if n not in before]
    for name in (n for n in after if n in before):
        found += [f"column {name!r}: {c}" for c in _column_changes(before[name], after[name])]
    if not found and [*before] != [*after]:
        found.append("columns reordered")
    return found


def load_mapping(path: Path) -> TableMapping:
    """Load and validate one mapping file.

    Raises:
        ConfigurationError: unreadable file, bad JSON or an invalid mapping (names the file).
    """
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"table mapping {path}: cannot read JSON: {exc}") from exc
    return replace(parse_mapping(raw, name=path.stem, where=str(path)), path=path)


def load_mappings(directory: Path) -> tuple[TableMapping, ...]:
    """Load every ``*.json`` mapping in ``directory``, sorted by file name.

    Raises:
        ConfigurationError: no mappings, an invalid one, or two mappings sharing a source or
            target table.
    """
    if not directory.is_dir():
        raise ConfigurationError(f"table mappings directory {directory} does not exist")
    mappings = tuple(load_mapping(p) for p in sorted(directory.glob("*.json")))
    if not mappings:
        raise ConfigurationError(f"no table mappings (*.json) in {directory}")
    for attr in ("source_table", "target_table"):
        seen: dict[str, TableMapping] = {}
        for m in mappings:
            value = getattr(m, attr)
            if value in seen:
                raise ConfigurationError(
                    f"table mappings {seen[value].path} and {m.path}: same {attr} {value!r}"
                )
            seen[value] = m
    return mappings
