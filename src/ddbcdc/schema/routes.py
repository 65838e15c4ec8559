"""Routed mappings: one DynamoDB table (a single-table design) into several PostgreSQL tables.

::

    {
      "source_table": "shop",
      "name": "shop",                                   # its name in PostgreSQL
      "key": [{"name": "pk", "source": "PK", "type": "text"},
              {"name": "sk", "source": "SK", "type": "text"}],
      "routes": [
        {"target_table": "customers",
         "match": {"PK": "CUSTOMER#{customer_id}", "SK": "PROFILE"},
         "columns": [{"name": "customer_id", "type": "bigint"},
                     {"name": "email", "type": "text"}],
         "extra": {"column": "attributes"}},
        {"target_table": "orders",
         "match": {"PK": "CUSTOMER#{customer_id}", "SK": "ORDER#{order_id}", "_et": "order"},
         "columns": [...]}
      ],
      "unmatched": {"target_table": "shop_unmatched"}
    }

``key`` is the DynamoDB key as columns (the versions table's key). A route's ``match`` gives
a **key template** for every key attribute (literal text and ``{placeholders}``) and/or
**entity attribute** values (any other attribute: equal to that string). A route with no key
template is keyed by the DynamoDB key itself. The placeholders are the route table's key:
each is a column of the route (``{"name": "customer_id", "type": "bigint"}``), typed from a
short list whose text form is exact and canonical (:mod:`ddbcdc.schema.matches`), so a key
converts exactly or the item is not that entity, and the route's key determines the DynamoDB
key (the template renders it back). Refused at load, naming file and route: a key attribute
without a template (two items would share a row), two placeholders with no literal between
them, a placeholder whose type has no exact text, a route ``key`` other than its
placeholders (a key that does not determine the DynamoDB key).

The first route that matches an item takes it. ``unmatched`` (on by default, ``false`` turns
it off) is the route of every other item: a table keyed by the DynamoDB key that keeps the
whole item; off, such an item is a dead letter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ddbcdc.schema.matches import check_placeholder_column, entity_values, key_templates
from ddbcdc.schema.model import (
    MAX_TARGET,
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
)

__all__ = ["parse_routed", "routed_differences", "routed_document"]

_ROUTED_FIELDS = frozenset({"source_table", "name", "key", "routes", "unmatched", "inferred"})
_ROUTE_FIELDS = frozenset({"target_table", "match", "key", "columns", "extra", "change_log"})
_UNMATCHED_FIELDS = frozenset({"target_table", "item_column", "change_log"})


def _route_columns(
    where: str,
    raw: Mapping[str, Any],
    templates: tuple[Template, ...],
    source_key: Sequence[ColumnMapping],
    identity: bool,
) -> tuple[ColumnMapping, ...]:
    placeholders = {p: t for t in templates for p in t.placeholders}
    columns_raw = raw.get("columns", [])
    if not isinstance(columns_raw, list):
        raise fail(where, "columns", "must be a list")
    columns = []
    for i, item in enumerate(columns_raw):
        field = f"columns[{i}]"
        column = parse_column(where, field, item, set(placeholders))
        template = placeholders.get(column.name)
        if template is not None:
            if item.get("source", template.attribute) != template.attribute:
                raise fail(
                    where,
                    f"{field}.source",
                    f"a placeholder's value comes from its key template (of {template.attribute})",
                )
            check_placeholder_column(where, field, column, template)
            column = ColumnMapping(column.name, template.attribute, column.type, True)
        columns.append(column)
    named = {c.name for c in columns}
    if identity:  # keyed by the DynamoDB key: its columns, unless the route lists them
        columns = [c for c in source_key if c.name not in named] + columns
    missing = [p for p in placeholders if p not in {c.name for c in columns}]
    if missing:
        raise fail(where, "columns", f"placeholder(s) {missing} need a column (with a type)")
    unique_columns(where, columns)
    return tuple(columns)


def _route_key(where: str, raw: Mapping[str, Any], placeholders: list[str]) -> tuple[str, ...]:
    key = raw.get("key", placeholders)
    if not isinstance(key, list) or sorted(key) != sorted(placeholders) or not key:
        raise fail(
            where,
            "key",
            f"a route's key is its placeholders {placeholders}: {key!r} would not determine "
            "the DynamoDB key, so two items could share a row",
        )
    return tuple(key)


def _parse_route(
    where: str, index: int, raw: Any, parent: str, source_key: Sequence[ColumnMapping]
) -> Route:
    if not isinstance(raw, Mapping):
        raise fail(where, f"routes[{index}]", "must be an object")
    target = identifier(
        where, f"routes[{index}].target_table", raw.get("target_table"), max_len=MAX_TARGET
    )
    where = f"{where} route {target!r}"
    unknown_fields(where, "<route>", raw.keys(), _ROUTE_FIELDS)
    match = raw.get("match")
    if not isinstance(match, Mapping) or not match:
        raise fail(where, "match", "must name key templates and/or entity attribute values")
    templates = key_templates(where, match, source_key)
    entity = entity_values(where, match, {c.source for c in source_key})
    identity = not any(c.source in match for c in source_key)
    columns = _route_columns(where, raw, templates, source_key, identity)
    placeholders = [p for t in templates for p in t.placeholders]
    extra_column, item_column = parse_extra(where, raw.get("extra"), [c.name for c in columns])
    mapping = TableMapping(
        name=f"{parent}:{target}",
        source_table="",
        target_table=target,
        key=_route_key(where, raw, placeholders),
        columns=columns,
        change_log=parse_flag(where, "change_log", raw.get("change_log", False)),
        extra_column=extra_column,
        item_column=item_column,
    )
    return Route(mapping, templates, entity)


def _catch_all(
    where: str, raw: Any, parent: str, name: str, source_key: tuple[ColumnMapping, ...]
) -> Route | None:
    if raw is False:
        return None
    if raw is None or raw is True:
        raw = {}
    if not isinstance(raw, Mapping):
        raise fail(where, "unmatched", "must be an object, or false to turn it off")
    unknown_fields(where, "unmatched", raw.keys(), _UNMATCHED_FIELDS)
    default = f"{name}_unmatched"
    target = identifier(
        where, "unmatched.target_table", raw.get("target_table", default), max_len=MAX_TARGET
    )
    item = identifier(where, "unmatched.item_column", raw.get("item_column", "item"))
    if item in {c.name for c in source_key}:
        raise fail(where, "unmatched.item_column", f"{item!r} is already a key column")
    mapping = TableMapping(
        name=f"{parent}:{target}",
        source_table="",
        target_table=target,
        key=tuple(c.name for c in source_key),
        columns=source_key,
        change_log=parse_flag(where, "unmatched.change_log", raw.get("change_log", False)),
        item_column=item,
    )
    templates = tuple(Template(c.source, ("", ""), (c.name,)) for c in source_key)
    return Route(mapping, templates, catch_all=True)


def _source_key(where: str, raw: Any) -> tuple[ColumnMapping, ...]:
    if not isinstance(raw, list) or not 1 <= len(raw) <= 2:
        raise fail(where, "key", "must list the DynamoDB key as one or two column objects")
    names = {c.get("name") for c in raw if isinstance(c, Mapping)}
    names_set = {n for n in names if isinstance(n, str)}
    columns = tuple(parse_column(where, f"key[{i}]", c, names_set) for i, c in enumerate(raw))
    unique_columns(where, columns)
    return columns


def parse_routed(raw: Mapping[str, Any], *, name: str, where: str) -> TableMapping:
    """Validate a routed mapping document (see the module doc).

    Raises:
        ConfigurationError: naming the file, the route and the field that is wrong.
    """
    unknown_fields(where, "<root>", raw.keys(), _ROUTED_FIELDS)
    source_table = raw.get("source_table")
    if not isinstance(source_table, str) or not source_table:
        raise fail(where, "source_table", "must be a non-empty string")
    own = identifier(where, "name", raw.get("name", name), max_len=MAX_TARGET)
    source_key = _source_key(where, raw.get("key"))
    routes_raw = raw.get("routes")
    if not isinstance(routes_raw, list) or not routes_raw:
        raise fail(where, "routes", "must be a non-empty list")
    routes = [_parse_route(where, i, r, name, source_key) for i, r in enumerate(routes_raw)]
    catch_all = _catch_all(where, raw.get("unmatched"), name, own, source_key)
    if catch_all is not None:
        routes.append(catch_all)
    targets = [own] + [r.target_table for r in routes]
    repeated = sorted({t for t in targets if targets.count(t) > 1})
    if repeated:
        raise fail(where, "routes", f"table(s) {repeated} named twice (name, routes, unmatched)")
    return TableMapping(
        name=name,
        source_table=source_table,
        target_table=own,
        key=tuple(c.name for c in source_key),
        columns=source_key,
        routes=tuple(routes),
    )


# -- documents -----------------------------------------------------------------------------


def _route_document(route: Route) -> dict[str, Any]:
    m = route.mapping
    match: dict[str, str] = {t.attribute: t.text for t in route.templates}
    match.update(route.entity)
    return {
        "target_table": m.target_table,
        "match": match,
        "key": list(m.key),
        "change_log": m.change_log,
        "extra": {"column": m.extra_column, "item_column": m.item_column},
        "columns": [column_document(c) for c in m.columns],
    }


def routed_document(mapping: TableMapping) -> dict[str, Any]:
    """A routed mapping as a normalized JSON object (every route's match and table)."""
    catch_all = mapping.catch_all
    routes = [r for r in mapping.routes if not r.catch_all]
    unmatched = None
    if catch_all is not None:
        unmatched = {
            "target_table": catch_all.target_table,
            "item_column": catch_all.mapping.item_column,
            "change_log": catch_all.mapping.change_log,
        }
    return {
        "source_table": mapping.source_table,
        "name": mapping.target_table,
        "key": [column_document(c) for c in mapping.columns],
        "routes": [_route_document(r) for r in routes],
        "unmatched": unmatched,
    }


def routed_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What differs between two mapping documents of which one at least is routed."""
    if "routes" not in old or "routes" not in new:
        return ["plain mapping -> routed" if "routes" in new else "routed mapping -> plain"]
    found = [
        f"{field} {old.get(field)!r} -> {new.get(field)!r}"
        for field in ("source_table", "name", "key", "unmatched")
        if old.get(field) != new.get(field)
    ]
    before = {r["target_table"]: r for r in old["routes"]}
    after = {r["target_table"]: r for r in new["routes"]}
    found += [f"route {t!r} removed" for t in before if t not in after]
    found += [f"route {t!r} added" for t in after if t not in before]
    kept = [t for t in after if t in before]
    if kept != [t for t in before if t in after]:
        found.append("routes reordered")
    for target in kept:
        fields = ("match", "key", "change_log", "extra")
        changes = table_differences(before[target], after[target], fields=fields)
        found += [f"route {target!r}: {c}" for c in changes]
    return found
