"""An item's key in each route of a routed mapping: its DynamoDB key attributes matched
against each route's key templates. Pure.

A route's key is its placeholders' values, each converted exactly (an integer placeholder
takes only a canonical integer, ``CUSTOMER#007`` is not ``customer_id = 7``; a date only
``YYYY-MM-DD``; a template that is one placeholder converts as a key column does), or the item
has no key in that route. Each route's key is matched only when first asked for: most changes
need the key of their own route only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from typing import Any, overload

from ddbcdc.cleanse.coerce import INT_BITS, key_coercer
from ddbcdc.schema.model import ColumnMapping, TableMapping, Template

__all__ = ["KeyTemplates", "RouteKeys"]

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


class KeyTemplates:
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
        of: KeyTemplates,
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
