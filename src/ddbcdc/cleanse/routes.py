"""Changes of a routed mapping -> the route that takes each item, and its row there. Pure.

For every change, its **source key** (the DynamoDB key, the versions row's key) converts as
a plain mapping's key does, and each route's key templates are matched against the Keys:
the route's **key** is its placeholders' values, each converted exactly (an integer
placeholder takes only a canonical integer, ``CUSTOMER#007`` is not ``customer_id = 7``; a
date only ``YYYY-MM-DD``; a template that is one placeholder converts as a key column does),
or the item has no key in that route. An INSERT or MODIFY goes to the first route whose
templates match and whose entity attributes the NewImage has; its row there is the route's
columns from the NewImage plus the key. The catch-all route (the DynamoDB key, the whole
item) matches every item; without one, an item no route takes is poison.

A REMOVE has no row. Its route is known here only when its record says it: its OldImage, or
a key that the first route whose templates match takes without an entity attribute; else
PostgreSQL's versions row knows where the item lives (:mod:`ddbcdc.materialize.routed`). Every
change carries its key in every route whose templates match (``route_keys``): the live row
that a REMOVE or an entity change takes away is in one of them. Each route's key is matched
only when first asked for: most changes need the key of their own route only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from typing import Any, overload

from ddbcdc.cleanse import (
    CleanChange,
    Cleanser,
    build_model,
    cause_of,
    missing_image,
    validate,
    version_of,
)
from ddbcdc.cleanse.coerce import INT_BITS, key_coercer
from ddbcdc.cleanse.kept import Keeper
from ddbcdc.cleanse.rowfn import compile_row
from ddbcdc.decode.record import ChangeRecord
from ddbcdc.errors import CleanseError
from ddbcdc.schema.model import ColumnMapping, Route, TableMapping, Template

__all__ = ["NO_ROUTE", "RouteKeys", "RoutedCleanser", "cleanser_for"]

#: Why an item is poison when no route matches it and the mapping has no catch-all.
NO_ROUTE = "no route matches the item (the mapping's unmatched target is off)"

#: What a placeholder inside a string may look like, by type: its canonical text only.
_PATTERNS = {
    "bigint": r"0|-?[1-9][0-9]*",
    "integer": r"0|-?[1-9][0-9]*",
    "smallint": r"0|-?[1-9][0-9]*",
    "date": r"[0-9]{4}-[0-9]{2}-[0-9]{2}",
    "text": r".*",
}


def _exact_text(column: ColumnMapping) -> Callable[[str], Any]:
    """The value of a placeholder's text that its pattern already found canonical."""
    if column.type in INT_BITS:
        low, high = -(2 ** INT_BITS[column.type]), 2 ** INT_BITS[column.type] - 1

        def integer(text: str) -> Any:
            value = int(text)
            if not low <= value <= high:
                raise ValueError("out of range")
            return value

        return integer
    if column.type == "date":
        return date.fromisoformat
    return key_coercer(column)  # text: what PostgreSQL can hold


class _Matcher:
    """One key template against the value of its key attribute."""

    __slots__ = ("_converters", "_literal", "_prefix", "_regex", "attribute", "cost")

    def __init__(self, template: Template, columns: Mapping[str, ColumnMapping]) -> None:
        self.attribute = template.attribute
        found = [columns[p] for p in template.placeholders]
        self._literal = template.literals[0] if not found else None
        self._prefix = template.literals[0]
        self._regex: re.Pattern[str] | None = None
        self._converters: tuple[Callable[[Any], Any], ...] = tuple(key_coercer(c) for c in found)
        #: Cheapest first: a literal is one comparison, a whole attribute one conversion.
        self.cost = 0 if not found else 1 if template.whole else 2
        if found and not template.whole:
            parts = [re.escape(template.literals[0])]
            for column, literal in zip(found, template.literals[1:], strict=True):
                parts += [f"({_PATTERNS[column.type]})", re.escape(literal)]
            self._regex = re.compile("".join(parts), re.DOTALL)
            self._converters = tuple(_exact_text(c) for c in found)

    def match(self, keys: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The placeholders' values, or None when the key is not this template's."""
        value = keys.get(self.attribute)
        if value is None:
            return None
        if self._literal is not None:
            return () if value == self._literal and type(value) is str else None
        try:
            if self._regex is None:  # the whole attribute: a key column's conversion
                return (self._converters[0](value),)
            if type(value) is not str or not value.startswith(self._prefix):
                return None
            found = self._regex.fullmatch(value)
            if found is None:
                return None
            converters = self._converters
            if len(converters) == 1:
                return (converters[0](found[1]),)
            return tuple(c(text) for c, text in zip(converters, found.groups(), strict=True))
        except ValueError:
            return None


_UNSET: Any = object()


class _RouteKeys:
    """Every route's key of one item: each distinct template matched once, the cheapest
    first; a template that is the DynamoDB key's own column is that column's value."""

    def __init__(self, mapping: TableMapping) -> None:
        source = {c.source: (i, c.type) for i, c in enumerate(mapping.key_columns)}
        unique: dict[tuple[Any, ...], int] = {}
        self._matchers: list[_Matcher] = []
        self._seeds: list[int | None] = []  # per matcher, its position in the DynamoDB key
        self._plans: list[tuple[tuple[int, ...], tuple[int, ...] | None]] = []
        for route in mapping.routes:
            by_name = {c.name: c for c in route.mapping.columns}
            entries = []
            for template in route.templates:
                types = tuple(by_name[p].type for p in template.placeholders)
                ident = (template.attribute, template.text, types)
                if ident not in unique:
                    unique[ident] = len(self._matchers)
                    matcher = _Matcher(template, by_name)
                    self._matchers.append(matcher)
                    position, type_ = source[template.attribute]
                    seeded = template.whole and types == (type_,)
                    self._seeds.append(position if seeded else None)
                index = unique[ident]
                entries.append((self._matchers[index].cost, index, template.placeholders))
            entries.sort(key=lambda e: e[0])
            names = [p for _, _, placeholders in entries for p in placeholders]
            order = tuple(names.index(k) for k in route.mapping.key)
            reorder = order if list(order) != list(range(len(order))) else None
            self._plans.append((tuple(i for _, i, _ in entries), reorder))
        #: Every route's key, none found yet.
        self.unset: tuple[Any, ...] = (_UNSET,) * len(self._plans)

    def key(
        self, route: int, keys: Mapping[str, Any], source_key: Sequence[Any]
    ) -> tuple[Any, ...] | None:
        """The item's key in route ``route`` (None where its templates do not match)."""
        indexes, reorder = self._plans[route]
        values: list[Any] = []
        for index in indexes:
            position = self._seeds[index]
            if position is None:
                got = self._matchers[index].match(keys)
                if got is None:
                    return None
                values += got
            else:
                values.append(source_key[position])
        if reorder is None:
            return tuple(values)
        return tuple(values[i] for i in reorder)

    def of(
        self,
        keys: Mapping[str, Any],
        source_key: tuple[Any, ...],
        known: tuple[int, tuple[Any, ...]] | None = None,
    ) -> RouteKeys:
        """Per route, the item's key there, each matched when first asked for; ``known``:
        (a route, the item's key there), found already."""
        found = self.unset
        if known is not None:
            index, key = known
            found = (*found[:index], key, *found[index + 1 :])
        return RouteKeys(self, keys, source_key, found)


class RouteKeys(Sequence[tuple[Any, ...] | None]):
    """An item's key in each route (None where the route's templates do not match), each
    route's found when first asked for: most changes need only the key of their own route.
    One small object per change, its keys kept in a tuple (what the garbage collector
    passes over)."""

    __slots__ = ("_found", "_keys", "_of", "_source")

    def __init__(
        self,
        of: _RouteKeys,
        keys: Mapping[str, Any],
        source: tuple[Any, ...],
        found: tuple[Any, ...],
    ) -> None:
        self._of, self._keys, self._source, self._found = of, keys, source, found

    def __len__(self) -> int:
        return len(self._found)

    @overload
    def __getitem__(self, index: int) -> tuple[Any, ...] | None: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[tuple[Any, ...] | None, ...]: ...

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return tuple(self[i] for i in range(len(self))[index])
        got = self._found[index]
        if got is _UNSET:
            got = self._of.key(index, self._keys, self._source)
            found = self._found
            self._found = (*found[:index], got, *found[index + 1 :])
        return got

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RouteKeys | tuple | list):
            return tuple(self) == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"RouteKeys({tuple(self)!r})"


def _text(value: Any) -> str:
    """The canonical text of a placeholder's value (what its pattern matches)."""
    if isinstance(value, date):
        return value.isoformat()
    return value if isinstance(value, str) else str(value)


class _RouteRows:
    """One route: whether an image is its entity, its rows, its key written back."""

    def __init__(self, route: Route, key_attributes: frozenset[str]) -> None:
        mapping = route.mapping
        self.route = route
        self.target = mapping.target_table
        self._entity = route.entity
        self._key_names = mapping.key
        key = set(mapping.key)
        data = tuple(c for c in mapping.columns if c.name not in key)
        self._by_name = {c.name: c for c in data}
        self._row_fn = compile_row(data, (), "NewImage")
        label = "".join(p.capitalize() for p in self.target.split("_")) or "Route"
        self._model = build_model(f"{label}Row", data, ())
        self._defaults = {c.name: c.default for c in data if c.default is not None}
        kept = mapping.extra_column is not None or mapping.item_column is not None
        implied = key_attributes | {a for a, _ in route.entity}
        self._keeper = Keeper(mapping, implied) if kept else None

    def render(self, key: Sequence[Any]) -> dict[str, Any]:
        """The key attributes of the item whose key in this route is ``key`` (the inverse of
        :meth:`key_of`: each template written back with its placeholders' canonical text)."""
        by_name = dict(zip(self._key_names, key, strict=True))
        out: dict[str, Any] = {}
        for template in self.route.templates:
            values = [by_name[p] for p in template.placeholders]
            if template.whole:
                value = values[0]
                out[template.attribute] = value.isoformat() if isinstance(value, date) else value
            else:
                out[template.attribute] = template.render([_text(v) for v in values])
        return out

    def takes(self, image: Mapping[str, Any]) -> bool:
        """Whether ``image`` has this route's entity attribute values."""
        for attribute, value in self._entity:
            found = image.get(attribute)
            if type(found) is not str or found != value:
                return False
        return True

    def row(
        self, record: ChangeRecord, image: dict[str, Any], key: tuple[Any, ...]
    ) -> dict[str, Any]:
        """The route's row of an image whose key in the route is ``key``.

        Raises:
            CleanseError: a value that does not fit its column (naming the route's table).
        """
        row = self._row_fn(image, record.keys)
        if row is None:
            values = dict(self._defaults)
            for name, column in self._by_name.items():
                value = image.get(column.source)
                if value is not None:
                    values[name] = value
            row = dict(
                validate(self._model, values, "NewImage", record, self.target, self._by_name)
            )
        for name, value in zip(self._key_names, key, strict=True):
            row[name] = value
        if self._keeper is not None:
            self._keeper.add(row, image, record)
        return row


class RoutedCleanser:
    """Cleanses records of a routed mapping (see the module doc); the interface of
    :class:`~ddbcdc.cleanse.Cleanser`.

    Args:
        mapping: a mapping with routes.
    """

    def __init__(self, mapping: TableMapping) -> None:
        self.mapping = mapping
        self._source = Cleanser(mapping)  # the DynamoDB key, as the versions row's key
        key_attributes = frozenset(c.source for c in mapping.columns)
        self._routes = tuple(_RouteRows(r, key_attributes) for r in mapping.routes)
        self._by_target = {r.target: r for r in self._routes}
        self._key_coercers = [(key_coercer(c), c.source) for c in mapping.key_columns]
        self._keys = _RouteKeys(mapping)
        catch_all = mapping.catch_all
        #: The table of the items no other route takes (None: they are dead letters).
        self.unmatched = catch_all.target_table if catch_all is not None else None

    def source_key(self, target: str, key: Sequence[Any]) -> tuple[Any, ...]:
        """The DynamoDB key (as the versions row's key) of the row of route ``target`` whose
        key there is ``key``."""
        attributes = self._by_target[target].render(key)
        return tuple(coerce(attributes[source]) for coerce, source in self._key_coercers)

    def route_keys(
        self, keys: Mapping[str, Any], source_key: Sequence[Any] | None = None
    ) -> RouteKeys:
        """The item's key in each route (None where the templates do not match);
        ``source_key``: the DynamoDB key as the versions row's key, when known.

        Raises:
            ValueError: without ``source_key``, a DynamoDB key that does not convert.
        """
        if source_key is None:
            source_key = tuple(coerce(keys[name]) for coerce, name in self._key_coercers)
        return self._keys.of(keys, tuple(source_key))

    def _named_route(self, record: ChangeRecord, route_keys: RouteKeys) -> str | None:
        """The route of a REMOVE when its record names it."""
        image = record.old_image
        for index, rows in enumerate(self._routes):
            if route_keys[index] is None:
                continue
            if image is not None:
                if rows.takes(image):
                    return rows.target
            elif rows.route.by_attribute:
                return None  # the item may be this route's, or a later one's
            else:
                return rows.target
        return None

    def cleanse(self, record: ChangeRecord) -> CleanChange:
        """Turn one change record into a :class:`~ddbcdc.cleanse.CleanChange` whose key is
        the DynamoDB key and whose row (INSERT/MODIFY) is its route's.

        Raises:
            CleanseError: a key that does not convert, a value that does not fit its
                route's column, or (with no catch-all) an item no route takes.
        """
        source_key = self._source.key_of(record)
        keys = record.keys
        version, seq = version_of(record)
        us = record.approximate_creation_us
        if record.event_name == "REMOVE":
            route_keys = self._keys.of(keys, source_key)
            route = self._named_route(record, route_keys)
            return CleanChange(
                self.mapping, record.event_id, "REMOVE", source_key, None, version, us, seq,
                cause_of(record), route=route, route_keys=route_keys,
            )  # fmt: skip
        image = record.new_image
        if image is None:
            raise missing_image(record)
        for index, rows in enumerate(self._routes):
            if not rows.takes(image):
                continue
            key = self._keys.key(index, keys, source_key)
            if key is not None:
                row = rows.row(record, image, key)
                route_keys = self._keys.of(keys, source_key, (index, key))
                return CleanChange(
                    self.mapping, record.event_id, record.event_name, source_key, row, version,
                    us, seq, route=rows.target, route_keys=route_keys,
                )  # fmt: skip
        raise CleanseError(
            f"{self.mapping.target_table}: {NO_ROUTE}",
            path="dynamodb.Keys",
            shard_id=record.shard_id,
            sequence_number=record.sequence_number,
            reason=NO_ROUTE,
        )


def cleanser_for(mapping: TableMapping) -> Cleanser | RoutedCleanser:
    """The cleanser of a mapping: routed or plain."""
    return RoutedCleanser(mapping) if mapping.routes else Cleanser(mapping)
