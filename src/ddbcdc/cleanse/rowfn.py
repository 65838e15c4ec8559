"""A mapping's row builder, compiled once into one Python function.

:func:`compile_row` writes the source of a function that takes a record's image (and its
Keys) and returns the row the row model would, or None when the model would reject it. Per
column it inlines the check of the common case (an int in range for an integer column; an
ASCII string without U+0000, or an int, for a text column, after its rules), so a fitting
value costs no call; any other value goes to the column's coercer
(:func:`~ddbcdc.cleanse.coerce.coercer`, :func:`~ddbcdc.cleanse.coerce.key_coercer`),
which decides exactly as the model's validator does. Names and sources enter the source only
as ``repr`` literals; values, coercers and defaults are bound by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ddbcdc.cleanse.coerce import INT_BITS, RULES, coercer, key_coercer
from ddbcdc.schema.mapping import ColumnMapping

__all__ = [
    "GivenRowFunction",
    "RowFunction",
    "ValuesFunction",
    "compile_given_row",
    "compile_row",
    "compile_values",
]

#: image, keys -> the row, or None when a value does not fit (the model then says why).
RowFunction = Callable[[Mapping[str, Any], Mapping[str, Any]], "dict[str, Any] | None"]
#: image, keys, values given -> the row (the given columns' values as given), or None.
GivenRowFunction = Callable[
    [Mapping[str, Any], Mapping[str, Any], tuple[Any, ...]], "dict[str, Any] | None"
]
#: image, keys -> the row's values in column order, or None as a :data:`RowFunction`.
ValuesFunction = Callable[[Mapping[str, Any], Mapping[str, Any]], "tuple[Any, ...] | None"]

_METHODS = {"trim": "strip", "lowercase": "lower", "uppercase": "upper"}


def _text_fast(
    v: str, i: int, rules: tuple[str, ...], names: dict[str, Any], *, is_key: bool
) -> list[str]:
    """Lines turning ``v`` (a present value) into its text column value: a string, or (not
    in a key, whose coercer writes numbers canonically) an int as its decimal text."""
    if is_key:
        lines = [f"if type({v}) is str:", f"    t = {v}"]
    else:
        lines = [
            f"if type({v}) is str: t = {v}",
            f"elif type({v}) is int: t = str({v})",
            "else: t = None",
            "if t is not None:",
        ]
    for j, rule in enumerate(rules):
        method = _METHODS.get(rule)
        if method is not None:
            lines.append(f"    t = t.{method}()")
        else:
            names[f"R{i}_{j}"] = RULES[rule]
            lines.append(f"    t = R{i}_{j}(t)")
    check = "t.isascii() and '\\x00' not in t"
    if rules:
        lines += [f"    if not t: {v} = None", f"    elif {check}: {v} = t"]
    else:
        lines.append(f"    if {check}: {v} = t")
    lines += [f"    else: {v} = C{i}({v})", f"else: {v} = C{i}({v})"]
    return lines


def _coerce(
    column: ColumnMapping, is_key: bool, v: str, i: int, names: dict[str, Any]
) -> list[str]:
    """Lines turning ``v`` (a present value) into its column value."""
    names[f"C{i}"] = key_coercer(column) if is_key else coercer(column)
    if column.type in INT_BITS:
        bits = INT_BITS[column.type]
        names[f"LO{i}"], names[f"HI{i}"] = -(2**bits), 2**bits - 1
        return [f"if type({v}) is not int or not LO{i} <= {v} <= HI{i}: {v} = C{i}({v})"]
    if column.type == "text":
        return _text_fast(v, i, () if is_key else column.rules, names, is_key=is_key)
    return [f"{v} = C{i}({v})"]


def compile_row(
    columns: tuple[ColumnMapping, ...], key: tuple[str, ...], image: str
) -> RowFunction:
    """The row function of ``columns`` read from ``image`` (``NewImage``, ``OldImage``: absent
    attributes fall back to the record's Keys for key columns, then to defaults; ``Keys``:
    neither)."""
    function: RowFunction = _compile(columns, key, image, values=False)
    return function


def compile_given_row(
    columns: tuple[ColumnMapping, ...], given: tuple[str, ...], image: str
) -> GivenRowFunction:
    """:func:`compile_row` of ``columns`` (none a key column) whose row also has the columns
    ``given``, their values passed in converted already (a route's key: one dict made)."""
    function: GivenRowFunction = _compile(columns, (), image, values=False, given=given)
    return function


def compile_values(
    columns: tuple[ColumnMapping, ...], key: tuple[str, ...], image: str
) -> ValuesFunction:
    """:func:`compile_row`, its values as a tuple in column order (a key: no dict made)."""
    function: ValuesFunction = _compile(columns, key, image, values=True)
    return function


def _compile(
    columns: tuple[ColumnMapping, ...],
    key: tuple[str, ...],
    image: str,
    *,
    values: bool,
    given: tuple[str, ...] = (),
) -> Any:
    in_image = image != "Keys"
    names: dict[str, Any] = {}
    body = ["get = image.get"]
    fields = []
    for i, column in enumerate(columns):
        v, is_key = f"v{i}", column.name in key
        body.append(f"{v} = get({column.source!r})")
        fallback = []
        if in_image and is_key:
            fallback.append(f"{v} = keys.get({column.source!r})")
        if in_image and column.default is not None:
            names[f"D{i}"] = column.default
            fallback.append(f"if {v} is None: {v} = D{i}" if fallback else f"{v} = D{i}")
        if fallback:
            body += [f"if {v} is None:", *(f"    {line}" for line in fallback)]
        coerce = _coerce(column, is_key, v, i, names)
        body += [f"if {v} is not None:", *(f"    {line}" for line in coerce)]
        if column.required:
            body.append(f"if {v} is None: return None")
        fields.append(f"{column.name!r}: {v}")
    fields += [f"{name!r}: given[{j}]" for j, name in enumerate(given)]
    if values:
        body.append("return (" + "".join(f"v{i}, " for i in range(len(columns))) + ")")
    else:
        body.append("return {" + ", ".join(fields) + "}")
    source = "\n".join(
        [
            "def row(image, keys, given=()):",
            "    try:",
            *(f"        {line}" for line in body),
            "    except ValueError:",
            "        return None",
        ]
    )
    exec(compile(source, f"<ddbcdc row of {image}>", "exec"), names)  # noqa: S102
    return names["row"]
