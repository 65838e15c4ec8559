"""Infer a routed mapping from a sample of a single-table design, for a person to review.

A single-table design tells its entities apart by key patterns (``PK = CUSTOMER#123``, ``SK =
ORDER#2024-05-01#9876``) and often by an entity attribute that modelling libraries write
(:data:`ENTITY_ATTRIBUTES`). From a sample:

- each S key value is cut at the separator (``#``, else the most common of :data:`SEPARATORS`)
  into parts; a part in capitals (``CUSTOMER``, ``PROFILE``, ``LINE``) is literal, any other
  part is a value. An item's **shape** is its key's literal parts and where the values are;
- an **entity attribute** is one of the known names whose S values most items carry, with
  few distinct values;
- items are grouped by shape (and entity value, where one shape holds several entities); a
  group with at least ``min_share`` of the items becomes a **route**: a key template per key
  attribute (the literal parts, a placeholder for each value: ``customer_id``, named after
  the literal before it; ``bigint`` when every value is a canonical integer, ``date`` when
  every one is ``YYYY-MM-DD``, else ``text``), the entity value when the shape alone does not
  tell the entity, and the group's columns as :func:`~ddbcdc.schema.infer.infer_mapping`
  infers them; the rarer groups are left to the catch-all.

Routes with more key parts come first (first match wins). ``inferred`` says what was seen
per group; ``ddbcdc mapping infer`` also routes the sample through the proposal and reports
how many items each route takes.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from ddbcdc.schema.infer import (
    attribute_columns,
    column_name,
    key_columns,
    observe,
    unique_name,
)
from ddbcdc.schema.mapping import parse_mapping
from ddbcdc.schema.model import MAX_TARGET

__all__ = ["ENTITY_ATTRIBUTES", "SEPARATORS", "infer_routes", "single_table_design"]

#: Entity attributes of modelling libraries: dynamodb-toolbox, ElectroDB, OneTable, others.
ENTITY_ATTRIBUTES = ("_et", "__edb_e__", "_type", "entityType", "entity", "type", "__typename")
SEPARATORS = ("#", "|", "::", ":")
_LITERAL = re.compile(r"[A-Z][A-Z0-9_]*")
_INT = re.compile(r"0|-?[1-9][0-9]*")
_DATE = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])")
_INT64 = 2**63
#: Shape: per key attribute, its parts (a literal's text, None for a value), or None when the
#: attribute is not an S value (a whole-attribute placeholder).
Shape = tuple[tuple[str | None, ...] | None, ...]


def _separator(values: Sequence[str]) -> str:
    counts = Counter(s for s in SEPARATORS for v in values if s in v)
    return counts.most_common(1)[0][0] if counts else "#"


def _shape(item: Mapping[str, Any], keys: Sequence[str], separator: str) -> Shape:
    shape: list[tuple[str | None, ...] | None] = []
    for key in keys:
        value = item.get(key, {})
        if "S" not in value:
            shape.append(None)
            continue
        parts = value["S"].split(separator)
        shape.append(tuple(p if _LITERAL.fullmatch(p) else None for p in parts))
    return tuple(shape)


def single_table_design(description: Mapping[str, Any], items: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the sample looks like a single-table design: most S key values have a literal
    part in capitals next to a value, in at least two shapes."""
    keys = [k["AttributeName"] for k in description["KeySchema"]]
    values = [i[k]["S"] for i in items for k in keys if "S" in i.get(k, {})]
    if not values:
        return False
    separator = _separator(values)
    shaped = [v for v in values if separator in v and _LITERAL.fullmatch(v.split(separator)[0])]
    shapes = {_shape(i, keys, separator) for i in items}
    return len(shaped) >= len(values) / 2 and len(shapes) >= 2


def _entity_attribute(items: Sequence[Mapping[str, Any]]) -> str | None:
    for name in ENTITY_ATTRIBUTES:
        values = [i[name]["S"] for i in items if "S" in i.get(name, {})]
        if len(values) >= 0.9 * len(items) and len(set(values)) <= max(2, len(items) // 20):
            return name
    return None


def _placeholder_type(values: Sequence[str]) -> str:
    if all(_INT.fullmatch(v) and -_INT64 <= int(v) < _INT64 for v in values):
        return "bigint"
    if all(_DATE.fullmatch(v) for v in values):
        return "date"
    return "text"


class _Group:
    """Items of one shape (and entity value)."""

    def __init__(self, shape: Shape, entity: str | None) -> None:
        self.shape = shape
        self.entity = entity  # in the route's match: None when the shape alone tells it
        self.label = entity  # what the group's items are (names the route's table)
        self.items: list[Mapping[str, Any]] = []

    def templates(
        self, keys: Sequence[str], separator: str, types: Mapping[str, str], taken: set[str]
    ) -> tuple[dict[str, str], list[dict[str, Any]]]:
        """(key attribute -> template, the placeholders' columns)."""
        match: dict[str, str] = {}
        columns: list[dict[str, Any]] = []
        for key, parts in zip(keys, self.shape, strict=True):
            if parts is None:  # not S: the whole attribute
                name = unique_name(column_name(key) or "key", taken)
                match[key] = "{" + name + "}"
                columns.append({"name": name, "type": types[key]})
                continue
            text, before = [], column_name(key) or "key"
            for position, part in enumerate(parts):
                if part is not None:
                    text.append(part.replace("{", "{{").replace("}", "}}"))
                    before = column_name(part) or before
                    continue
                values = [i[key]["S"].split(separator)[position] for i in self.items]
                type_ = _placeholder_type(values)
                suffix = "date" if type_ == "date" else "id"
                name = unique_name(f"{before}_{suffix}", taken)
                text.append("{" + name + "}")
                columns.append({"name": name, "type": type_})
            match[key] = separator.join(text)
        return match, columns


def _groups(
    items: Sequence[Mapping[str, Any]], keys: Sequence[str], separator: str, entity: str | None
) -> list[_Group]:
    groups: dict[tuple[Shape, str | None], _Group] = {}
    for item in items:
        value = item.get(entity, {}).get("S") if entity is not None else None
        shape = _shape(item, keys, separator)
        groups.setdefault((shape, value), _Group(shape, value)).items.append(item)
    per_shape = Counter(g.shape for g in groups.values())
    for group in groups.values():
        if per_shape[group.shape] == 1:
            group.entity = None  # the key tells this entity: no attribute in its match
    return sorted(groups.values(), key=lambda g: (-_parts(g.shape), -len(g.items)))


def _parts(shape: Shape) -> int:
    return sum(len(p) if p is not None else 1 for p in shape)


def _target(table: str, group: _Group, taken: set[str]) -> str:
    words = [p for parts in group.shape if parts for p in parts if p is not None]
    base = column_name(group.label) if group.label else column_name("_".join(words))
    name = f"{table}_{base or 'items'}"[:MAX_TARGET]
    return unique_name(name, taken)


def infer_routes(
    description: Mapping[str, Any],
    items: Sequence[Mapping[str, Any]],
    *,
    name: str | None = None,
    extra_column: str = "attributes",
    min_share: float = 0.01,
    change_log: bool = False,
) -> dict[str, Any]:
    """A routed mapping document for a single-table design (see the module doc).

    Raises:
        ConfigurationError: the result is not a valid mapping, naming why.
    """
    table = str(description["TableName"])
    own = name or column_name(table) or "table"
    keys = [k["AttributeName"] for k in description["KeySchema"]]
    _, stats = observe(items)
    key_cols = key_columns(description, stats, set())
    types = {k: c["type"] for k, c in zip(keys, key_cols, strict=True)}
    values = [i[k]["S"] for i in items for k in keys if "S" in i.get(k, {})]
    separator = _separator(values)
    entity = _entity_attribute(items)
    routes, seen, left, tables = [], [], [], {own, f"{own}_unmatched"}
    for group in _groups(items, keys, separator, entity):
        summary = {"items": len(group.items), "entity": group.entity}
        if len(group.items) < min_share * len(items):
            left.append(summary)
            continue
        taken = {extra_column}
        match, placeholders = group.templates(keys, separator, types, taken)
        if group.entity is not None and entity is not None:
            match[entity] = group.entity
        _, group_stats = observe(group.items)
        rest = {a: s for a, s in group_stats.items() if a not in keys and a != entity}
        columns, _ = attribute_columns(rest, len(group.items), min_share, taken)
        target = _target(own, group, tables)
        route: dict[str, Any] = {
            "target_table": target,
            "match": match,
            "columns": placeholders + columns,
            "extra": {"column": extra_column},
        }
        if change_log:
            route["change_log"] = True
        routes.append(route)
        seen.append({**summary, "target_table": target, "match": match})
    document: dict[str, Any] = {
        "source_table": table,
        "name": own,
        "key": [{k: v for k, v in c.items() if k != "required"} for c in key_cols],
        "routes": routes,
        "unmatched": {"target_table": f"{own}_unmatched"},
        "inferred": {
            "sampled_items": len(items),
            "table_item_count": description.get("ItemCount"),
            "separator": separator,
            "entity_attribute": entity,
            "min_share": min_share,
            "routes": seen,
            "left_to_unmatched": left,
        },
    }
    parse_mapping(document, name=own, where=f"inferred from {table}")
    return document
