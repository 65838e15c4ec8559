"""An item's key in each route of a routed mapping, and the first route that takes it: its
DynamoDB key attributes matched against each route's key templates. Pure.

A route's key is its placeholders' values, each converted exactly (an integer placeholder
takes only a canonical integer, ``CUSTOMER#007`` is not ``customer_id = 7``; a date only
``YYYY-MM-DD``; a template that is one placeholder converts as a key column does), or the item
has no key in that route.

Each route's templates are compiled into one Python function (the Keys and the DynamoDB key
-> the route's key, or None), the cheapest test first: a literal template is one comparison,
a template that is the DynamoDB key's own column is that column's value, any other template
is its literal prefix, then one regular expression capturing all its placeholders, each
converted inline. :attr:`KeyTemplates.first` is one more function: per route in order, its
entity attributes, then its key; :attr:`KeyTemplates.named` another: the route a REMOVE
without an image names by its key. Attribute names and literals enter the source only as
``repr`` literals; patterns and converters are bound by name (as in
:mod:`ddbcdc.cleanse.rowfn`). Each route's key is matched only when first asked for
(:class:`RouteKeys`): most changes need the key of their own route only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from typing import Any, overload

from ddbcdc.cleanse.coerce import INT_BITS, key_coercer
from ddbcdc.schema.model import ColumnMapping, Route, TableMapping, Template

__all__ = ["KeyFunction", "KeyTemplates", "RouteKeys"]

#: The Keys and the DynamoDB key (as the versions row's key) -> a route's key, or None.
KeyFunction = Callable[[Mapping[str, Any], Sequence[Any]], "tuple[Any, ...] | None"]
#: An image, its Keys and its DynamoDB key -> (the first route that takes it, its key there).
FirstFunction = Callable[
    [Mapping[str, Any], Mapping[str, Any], Sequence[Any]], "tuple[int, tuple[Any, ...]] | None"
]
#: The Keys and the DynamoDB key -> (the route named, or None; per route, its key found, or
#: not asked for).
NamedFunction = Callable[[Mapping[str, Any], Sequence[Any]], "tuple[int | None, tuple[Any, ...]]"]

#: What a placeholder inside a string may look like, by type: its canonical text only.
_PATTERNS = {
    "bigint": r"0|-?[1-9][0-9]*",
    "integer": r"0|-?[1-9][0-9]*",
    "smallint": r"0|-?[1-9][0-9]*",
    "date": r"[0-9]{4}-[0-9]{2}-[0-9]{2}",
    "text": r".*",
}


def _captured(t: int, j: int, column: ColumnMapping, var: str, names: dict[str, Any]) -> list[str]:
    """Lines setting ``var``, the placeholder ``column``, from the group ``j`` of the match
    ``m`` (text its pattern already found canonical), or raising ValueError."""
    if column.type in INT_BITS:
        bits = INT_BITS[column.type]
        low, high = f"LO{t}_{j}", f"HI{t}_{j}"
        names[low], names[high] = -(2**bits), 2**bits - 1
        return [f"{var} = int(m[{j}])", f"if not {low} <= {var} <= {high}: return None"]
    if column.type == "date":
        names["fromisoformat"] = date.fromisoformat
        return [f"{var} = fromisoformat(m[{j}])"]
    names[f"C{t}_{j}"] = key_coercer(column)  # text: what PostgreSQL can hold
    return [f"{var} = C{t}_{j}(m[{j}])"]


def _template_lines(
    t: int,
    template: Template,
    columns: Mapping[str, ColumnMapping],
    seed: int | None,
    names: dict[str, Any],
) -> tuple[int, list[str]]:
    """(its cost, the lines setting the variable ``p<n>`` of each placeholder of
    ``template``, its ``n`` in ``columns``, or returning None when the key is not this
    template's)."""
    found = [columns[p] for p in template.placeholders]
    var = {c.name: f"p{list(columns).index(c.name)}" for c in found}
    get = f"v = keys.get({template.attribute!r})"
    if not found:  # a literal
        return 0, [get, f"if type(v) is not str or v != {template.literals[0]!r}: return None"]
    if template.whole:
        if seed is not None:  # the DynamoDB key's own column, converted already
            return 1, [f"{var[found[0].name]} = source[{seed}]"]
        names[f"C{t}"] = key_coercer(found[0])
        return 1, [get, "if v is None: return None", f"{var[found[0].name]} = C{t}(v)"]
    parts = [re.escape(template.literals[0])]
    for column, literal in zip(found, template.literals[1:], strict=True):
        parts += [f"({_PATTERNS[column.type]})", re.escape(literal)]
    names[f"X{t}"] = re.compile("".join(parts), re.DOTALL).fullmatch
    prefix = template.literals[0]
    lines = [get, f"if type(v) is not str or not v.startswith({prefix!r}): return None"]
    matched = [f"m = X{t}(v)", "if m is None: return None"]
    for j, column in enumerate(found, 1):
        matched += _captured(t, j, column, var[column.name], names)
    if len(found) == 1 and found[0].type in INT_BITS and template.literals[1] == "":
        # ``PREFIX{n}``: a canonical natural number after the prefix needs no pattern
        n = var[found[0].name]
        lines += [
            f"t = v[{len(prefix)}:]",
            "if t.isdigit() and t.isascii() and (t[0] != '0' or t == '0'):",
            f"    {n} = int(t)",
            f"    if not LO{t}_1 <= {n} <= HI{t}_1: return None",
            "else:",
            *(f"    {line}" for line in matched),
        ]
    else:
        lines += matched
    return 2, lines


def _compile(source: str, filename: str, names: dict[str, Any], function: str) -> Any:
    exec(compile(source, filename, "exec"), names)  # noqa: S102
    return names[function]


def compile_key(route: Route, source_types: Mapping[str, tuple[int, str]]) -> KeyFunction:
    """The key function of ``route`` (see the module doc); ``source_types``: per key
    attribute, its position in the DynamoDB key and its column type."""
    columns = {c.name: c for c in route.mapping.columns}
    names: dict[str, Any] = {}
    blocks = []
    for t, template in enumerate(route.templates):
        position, type_ = source_types[template.attribute]
        types = tuple(columns[p].type for p in template.placeholders)
        seeded = template.whole and types == (type_,)
        blocks.append(_template_lines(t, template, columns, position if seeded else None, names))
    blocks.sort(key=lambda block: block[0])  # cheapest first
    body = [line for _, lines in blocks for line in lines]
    order = list(columns)
    body.append("return (" + "".join(f"p{order.index(k)}, " for k in route.mapping.key) + ")")
    source = "\n".join(
        [
            "def key(keys, source):",
            "    try:",
            *(f"        {line}" for line in body),
            "    except ValueError:",
            "        return None",
        ]
    )
    filename = f"<ddbcdc key of route {route.target_table}>"
    function: KeyFunction = _compile(source, filename, names, "key")
    return function


def compile_first(routes: Sequence[Route], keys: Sequence[KeyFunction]) -> FirstFunction:
    """The function giving the first of ``routes`` (with their key functions ``keys``) whose
    entity attributes an image has and whose templates match its Keys, and its key there."""
    names: dict[str, Any] = {}
    body = ["get = image.get"]
    for i, (route, key) in enumerate(zip(routes, keys, strict=True)):
        names[f"K{i}"] = key
        tests = [f"type(e := get({a!r})) is str and e == {v!r}" for a, v in route.entity]
        lines = [f"k = K{i}(keys, source)", f"if k is not None: return {i}, k"]
        if tests:
            body.append("if " + " and ".join(f"({test})" for test in tests) + ":")
            lines = [f"    {line}" for line in lines]
        body += lines
    body.append("return None")
    source = "\n".join(["def first(image, keys, source):", *(f"    {b}" for b in body)])
    function: FirstFunction = _compile(source, "<ddbcdc first route>", names, "first")
    return function


#: A route's key not asked for yet.
_UNSET: Any = object()


def compile_named(routes: Sequence[Route], keys: Sequence[KeyFunction]) -> NamedFunction:
    """The function giving the route a REMOVE without an image names by its key alone: the
    first of ``routes`` whose templates match, unless it is chosen by an entity attribute
    (then None: the item may be a later route's); and the keys found meanwhile (the rest
    not asked for: :data:`_UNSET`)."""
    names: dict[str, Any] = {"U": _UNSET}
    body = []
    for i, (route, key) in enumerate(zip(routes, keys, strict=True)):
        names[f"K{i}"] = key
        found = "".join(f"k{j}, " for j in range(i + 1)) + "U, " * (len(routes) - i - 1)
        named = "None" if route.by_attribute else str(i)
        body += [f"k{i} = K{i}(keys, source)", f"if k{i} is not None: return {named}, ({found})"]
    body.append("return None, (" + "".join(f"k{j}, " for j in range(len(routes))) + ")")
    source = "\n".join(["def named(keys, source):", *(f"    {b}" for b in body)])
    function: NamedFunction = _compile(source, "<ddbcdc named route>", names, "named")
    return function


class KeyTemplates:
    """Every route's key function, and the function that finds an item's route."""

    def __init__(self, mapping: TableMapping) -> None:
        source = {c.source: (i, c.type) for i, c in enumerate(mapping.key_columns)}
        #: Per route, its key function.
        self.keys: tuple[KeyFunction, ...] = tuple(compile_key(r, source) for r in mapping.routes)
        #: The first route that takes an item, and its key there (None: no route does).
        self.first: FirstFunction = compile_first(mapping.routes, self.keys)
        #: The route a REMOVE without an image names, and the keys found on the way.
        self.named: NamedFunction = compile_named(mapping.routes, self.keys)
        #: Every route's key, none found yet.
        self.unset: tuple[Any, ...] = (_UNSET,) * len(self.keys)

    def key(
        self, route: int, keys: Mapping[str, Any], source_key: Sequence[Any]
    ) -> tuple[Any, ...] | None:
        """The item's key in route ``route`` (None where its templates do not match)."""
        return self.keys[route](keys, source_key)

    def of(
        self,
        keys: Mapping[str, Any],
        source_key: tuple[Any, ...],
        known: tuple[int, tuple[Any, ...]] | None = None,
    ) -> RouteKeys:
        """Per route, the item's key there, each matched when first asked for; ``known``:
        (a route, the item's key there), found already."""
        route, key = known if known is not None else (None, None)
        return RouteKeys(self.keys, keys, source_key, self.unset, route, key)


class RouteKeys(Sequence[tuple[Any, ...] | None]):
    """An item's key in each route (None where the route's templates do not match), each
    route's found when first asked for: most changes need only the key of their own route,
    known when the change is made. One small object per change, its keys kept in tuples
    (what the garbage collector passes over)."""

    __slots__ = ("_found", "_functions", "_key", "_keys", "_route", "_source")

    def __init__(
        self,
        functions: tuple[KeyFunction, ...],
        keys: Mapping[str, Any],
        source: Sequence[Any],
        found: tuple[Any, ...],
        route: int | None,
        key: tuple[Any, ...] | None,
    ) -> None:
        self._functions, self._keys, self._source = functions, keys, source
        self._found, self._route, self._key = found, route, key

    def __len__(self) -> int:
        return len(self._found)

    @overload
    def __getitem__(self, index: int) -> tuple[Any, ...] | None: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[tuple[Any, ...] | None, ...]: ...

    def __getitem__(self, index: int | slice) -> Any:
        if index == self._route:
            return self._key
        if isinstance(index, slice):
            return tuple(self[i] for i in range(len(self))[index])
        got = self._found[index]
        if got is _UNSET:
            got = self._functions[index](self._keys, self._source)
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
