"""What a mapping is, once validated: columns, tables, routes, key templates; and the checks
of one field that plain and routed mappings share.

A plain mapping (:class:`TableMapping` without routes) copies one DynamoDB table into one
PostgreSQL table. A routed mapping copies it into several: each :class:`Route` has a match
(key :class:`Template` per key attribute, entity attribute values) and a table of its own,
described by a plain :class:`TableMapping` whose key is the templates' placeholders. Parsing
is :mod:`ddbcdc.schema.mapping` (plain) and :mod:`ddbcdc.schema.routes` (routed).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ddbcdc.errors import ConfigurationError
from ddbcdc.schema.deletes import DEFAULT_POLICY, DeletePolicy

__all__ = [
    "COLUMN_TYPES",
    "KEY_TYPES",
    "RULES",
    "ColumnMapping",
    "Route",
    "TableMapping",
    "Template",
    "without_change_log",
]

#: PostgreSQL column types a mapping may use.
COLUMN_TYPES: frozenset[str] = frozenset(
    {
        "bigint",
        "integer",
        "smallint",
        "numeric",
        "text",
        "boolean",
        "bytea",
        "jsonb",
        "timestamptz",
        "date",
    }
)
#: Cleanse rules a column may list, applied in order to text values.
RULES: frozenset[str] = frozenset({"trim", "lowercase", "uppercase", "digits_only"})
#: Types a key column may have: those that map distinct DynamoDB key values (S, N, B) to
#: distinct PostgreSQL values. Not jsonb (equal maps in another attribute order), timestamptz
#: (equal instants in other notations) or boolean (never a DynamoDB key type); date only in
#: its one ISO form (``2024-05-01``).
KEY_TYPES: frozenset[str] = frozenset(
    {"bigint", "integer", "smallint", "numeric", "text", "bytea", "date"}
)

#: Prefix of every bookkeeping table and column; mapped names may not use it.
RESERVED_PREFIX = "_ddbcdc_"
VERSIONS_PREFIX = "ddbcdc_versions__"
CHANGE_LOG_PREFIX = "ddbcdc_changes__"

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
MAX_IDENTIFIER = 63
#: Room for the longest derived name, the versions table's index: <prefix><target>_d_idx.
MAX_TARGET = MAX_IDENTIFIER - len(VERSIONS_PREFIX) - len("_d_idx") - 2
_EXTRA_FIELDS = frozenset({"column", "item_column"})
_COLUMN_FIELDS = frozenset({"name", "source", "type", "required", "default", "rules"})


@dataclass(frozen=True, slots=True)
class ColumnMapping:
    """One target column and where its value comes from.

    Attributes:
        name: the PostgreSQL column name.
        source: the DynamoDB attribute name (of a key template's placeholder: the key
            attribute the template reads).
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
class Template:
    """A key template: the text of one key attribute, literal parts and placeholders.

    ``literals`` has one more part than ``placeholders``: the text is ``literals[0]``,
    ``{placeholders[0]}``, ``literals[1]``, ... Between two placeholders there is always a
    literal; a template that is one placeholder (``{pk}``) takes the attribute whole.
    """

    attribute: str
    literals: tuple[str, ...]
    placeholders: tuple[str, ...]

    @property
    def whole(self) -> bool:
        """The template is one placeholder: the attribute's value, whatever its type."""
        return self.literals == ("", "")

    @property
    def text(self) -> str:
        """The template as written (braces of the literal parts doubled)."""
        out = [self.literals[0].replace("{", "{{").replace("}", "}}")]
        for name, literal in zip(self.placeholders, self.literals[1:], strict=True):
            out.append("{" + name + "}" + literal.replace("{", "{{").replace("}", "}}"))
        return "".join(out)

    def render(self, texts: Sequence[str]) -> str:
        """The attribute's text from its placeholders' texts (in order)."""
        out = [self.literals[0]]
        for text, literal in zip(texts, self.literals[1:], strict=True):
            out += [text, literal]
        return "".join(out)


@dataclass(frozen=True, slots=True)
class TableMapping:
    """A validated mapping of one DynamoDB table onto PostgreSQL.

    A plain mapping has one target table. A routed one (``routes`` not empty) has a table per
    route; its own ``target_table`` is then its name in PostgreSQL (its versions table, prune
    floor, mapping version, snapshots), its ``key`` and ``columns`` the DynamoDB key.
    """

    name: str
    source_table: str
    target_table: str
    key: tuple[str, ...]
    columns: tuple[ColumnMapping, ...]
    change_log: bool = False
    path: Path | None = None
    extra_column: str | None = None
    item_column: str | None = None
    routes: tuple[Route, ...] = ()
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

    @property
    def catch_all(self) -> Route | None:
        """The route of the items no other route matches (None: they are dead letters)."""
        return self.routes[-1] if self.routes and self.routes[-1].catch_all else None

    @property
    def targets(self) -> tuple[str, ...]:
        """The PostgreSQL tables of live rows: the target, or each route's."""
        if self.routes:
            return tuple(r.target_table for r in self.routes)
        return (self.target_table,)


@dataclass(frozen=True, slots=True)
class Route:
    """One target of a routed mapping: which items it takes and the table they go to.

    Attributes:
        mapping: the route's table (its key: the placeholders of ``templates``).
        templates: one per key attribute of the source table, in the source key's order.
        entity: attribute values the item must have (``("_et", "customer")``).
        catch_all: the route of the items no other route matches (the whole item kept).
    """

    mapping: TableMapping
    templates: tuple[Template, ...]
    entity: tuple[tuple[str, str], ...] = ()
    catch_all: bool = False

    @property
    def target_table(self) -> str:
        """The route's PostgreSQL table."""
        return self.mapping.target_table

    @property
    def by_attribute(self) -> bool:
        """The route is chosen by an entity attribute, not by the key alone."""
        return bool(self.entity)


def without_change_log(mapping: TableMapping) -> TableMapping:
    """``mapping`` writing no change log, its routes' included (backfill rows are not
    changes)."""
    routes = tuple(replace(r, mapping=replace(r.mapping, change_log=False)) for r in mapping.routes)
    return replace(mapping, change_log=False, routes=routes)


# -- the checks of one field ---------------------------------------------------------------


def fail(where: str, field: str, message: str) -> ConfigurationError:
    """The error of a mapping's field (``where``: the file, and the route)."""
    return ConfigurationError(f"table mapping {where}: field {field!r}: {message}")


def identifier(where: str, field: str, value: Any, *, max_len: int = MAX_IDENTIFIER) -> str:
    """``value`` if it is a lower-case identifier ddbcdc may use, else the error."""
    if not isinstance(value, str) or not _IDENTIFIER.match(value):
        raise fail(where, field, f"{value!r} is not a lower-case identifier ([a-z_][a-z0-9_]*)")
    if len(value) > max_len:
        raise fail(where, field, f"{value!r} is longer than {max_len} characters")
    if value.startswith(RESERVED_PREFIX) or value.startswith("ddbcdc_"):
        raise fail(where, field, f"{value!r} uses the reserved prefix 'ddbcdc_'")
    return value


def unknown_fields(where: str, field: str, given: Iterable[str], known: frozenset[str]) -> None:
    """Refuse fields not in ``known``."""
    extra = sorted(set(given) - known)
    if extra:
        raise fail(where, field, f"unknown field(s) {extra}; known: {sorted(known)}")


def check_key_column(where: str, field: str, raw: Mapping[str, Any], type_: str) -> None:
    """Refuse what would merge distinct DynamoDB items into one row (or split one in two)."""
    if type_ not in KEY_TYPES:
        raise fail(
            where,
            f"{field}.type",
            f"a key column cannot be {type_}: distinct DynamoDB keys could become one row "
            f"(key types: {sorted(KEY_TYPES)})",
        )
    if raw.get("rules"):
        raise fail(
            where,
            f"{field}.rules",
            "a key column takes no rules: they would make distinct DynamoDB keys equal",
        )
    if raw.get("default") is not None:
        raise fail(
            where, f"{field}.default", "a key column takes no default: every item has its key"
        )


def parse_column(where: str, field: str, raw: Any, key: set[str]) -> ColumnMapping:
    """One column object (``field``: how to name it in errors, ``columns[2]``)."""
    if not isinstance(raw, Mapping):
        raise fail(where, field, "must be an object")
    unknown_fields(where, field, raw.keys(), _COLUMN_FIELDS)
    name = identifier(where, f"{field}.name", raw.get("name"))
    source = raw.get("source", name)
    if not isinstance(source, str) or not source:
        raise fail(where, f"{field}.source", "must be a non-empty string")
    type_ = raw.get("type")
    if type_ not in COLUMN_TYPES:
        raise fail(where, f"{field}.type", f"unknown type {type_!r}; known: {sorted(COLUMN_TYPES)}")
    required = raw.get("required", False)
    if not isinstance(required, bool):
        raise fail(where, f"{field}.required", "must be true or false")
    rules = raw.get("rules", [])
    if not isinstance(rules, list) or any(r not in RULES for r in rules):
        raise fail(where, f"{field}.rules", f"{rules!r}: each rule must be one of {sorted(RULES)}")
    if rules and type_ != "text":
        raise fail(where, f"{field}.rules", "rules apply to text columns only")
    if name in key:
        check_key_column(where, field, raw, str(type_))
    return ColumnMapping(
        name=name,
        source=source,
        type=str(type_),
        required=required or name in key,
        default=raw.get("default"),
        rules=tuple(rules),
    )


def unique_columns(where: str, columns: Sequence[ColumnMapping]) -> None:
    """Refuse two columns of one name."""
    names = [c.name for c in columns]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise fail(where, "columns", f"duplicate column name(s) {duplicates}")


def parse_extra(where: str, raw: Any, names: list[str]) -> tuple[str | None, str | None]:
    """The kept columns of ``extra``: (unmapped attributes, whole item)."""
    if raw is None:
        return None, None
    if not isinstance(raw, Mapping) or not raw:
        raise fail(where, "extra", 'must be an object: {"column": ..., "item_column": ...}')
    unknown_fields(where, "extra", raw.keys(), _EXTRA_FIELDS)
    found: list[str | None] = []
    for field in ("column", "item_column"):
        value = raw.get(field)
        if value is not None:
            value = identifier(where, f"extra.{field}", value)
            if value in names or value in found:
                raise fail(where, f"extra.{field}", f"{value!r} is already a column")
        found.append(value)
    return found[0], found[1]


def parse_flag(where: str, field: str, value: Any) -> bool:
    """A true/false field."""
    if not isinstance(value, bool):
        raise fail(where, field, "must be true or false")
    return value


def column_document(column: ColumnMapping) -> dict[str, Any]:
    """A column as a normalized JSON object."""
    return {
        "name": column.name,
        "source": column.source,
        "type": column.type,
        "required": column.required,
        "default": column.default,
        "rules": list(column.rules),
    }


def _column_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    return [
        f"{field} {old.get(field)!r} -> {new.get(field)!r}"
        for field in ("source", "type", "required", "default", "rules")
        if old.get(field) != new.get(field)
    ]


def table_differences(
    old: Mapping[str, Any], new: Mapping[str, Any], *, fields: Sequence[str] | None = None
) -> list[str]:
    """What differs between two plain mapping documents, ``old`` to ``new``, one phrase
    each (``column 'city' added``); ``fields``: the top-level fields compared."""
    compared = fields or ("source_table", "target_table", "key", "change_log", "extra")
    found = [
        f"{field} {old.get(field)!r} -> {new.get(field)!r}"
        for field in compared
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
