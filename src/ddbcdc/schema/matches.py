"""A route's ``match``: key templates and entity attribute values, parsed and checked.

A key template is literal text and ``{placeholders}`` (``{{``/``}}`` literal braces); every
key attribute of the DynamoDB key has one, or none has (the route is keyed by the DynamoDB key
itself). Two placeholders need literal text between them, and a placeholder inside a string
has a type whose text is exact and canonical (:data:`PLACEHOLDER_TYPES`), so a key converts
exactly or the item is not that entity. Any other attribute of a match is an entity
attribute: a literal string value. See :mod:`ddbcdc.schema.routes` for the whole mapping.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ddbcdc.schema.model import ColumnMapping, Template, fail

__all__ = [
    "PLACEHOLDER_TYPES",
    "check_placeholder_column",
    "entity_values",
    "key_templates",
    "parse_template",
]

#: Types a placeholder inside a string may have: their text is exact and canonical (one text
#: per value, one value per text). Not numeric (``7.1`` and ``7.10`` are one value), bytea,
#: boolean, jsonb or timestamptz (no one exact text). A template that is one placeholder
#: takes any key type (:data:`~ddbcdc.schema.model.KEY_TYPES`), converted as a key column is.
PLACEHOLDER_TYPES: frozenset[str] = frozenset({"bigint", "integer", "smallint", "text", "date"})

_PLACEHOLDER = re.compile(r"[a-z_][a-z0-9_]*")
_PLACEHOLDER_IN = re.compile(r"(?<!\{)\{[a-z_][a-z0-9_]*\}")


def parse_template(attribute: str, text: str) -> Template:
    """A key template's text -> :class:`Template` (``{{``/``}}`` are literal braces).

    Raises:
        ValueError: a malformed template, or two placeholders with no literal between them.
    """
    literals: list[str] = []
    placeholders: list[str] = []
    buf: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c in "{}" and text.startswith(c * 2, i):
            buf.append(c)
            i += 2
        elif c == "{":
            end = text.find("}", i)
            name = text[i + 1 : end] if end > 0 else ""
            if not _PLACEHOLDER.fullmatch(name):
                raise ValueError("a placeholder must be {name} with a lower-case identifier")
            literals.append("".join(buf))
            buf = []
            placeholders.append(name)
            i = end + 1
        elif c == "}":
            raise ValueError("a lone '}' (write '}}' for a literal brace)")
        else:
            buf.append(c)
            i += 1
    literals.append("".join(buf))
    if any(not part for part in literals[1:-1]):
        raise ValueError(
            "two placeholders with no literal text between them: their values cannot be told "
            "apart, so two keys could share a row"
        )
    return Template(attribute, tuple(literals), tuple(placeholders))


def key_templates(
    where: str, match: Mapping[str, Any], source_key: Sequence[ColumnMapping]
) -> tuple[Template, ...]:
    """The key templates of a match, one per key attribute; the identity (the key's own
    columns) when the match names no key attribute."""
    given = {c.source: match[c.source] for c in source_key if c.source in match}
    if not given:
        return tuple(Template(c.source, ("", ""), (c.name,)) for c in source_key)
    missing = [c.source for c in source_key if c.source not in given]
    if missing:
        raise fail(
            where,
            "match",
            f"no template for key attribute(s) {missing}: items that differ only there would "
            "share a row (give every key attribute a template)",
        )
    out = []
    for column in source_key:
        text = given[column.source]
        if not isinstance(text, str):
            raise fail(where, f"match.{column.source}", "a key template must be a string")
        try:
            template = parse_template(column.source, text)
        except ValueError as exc:
            raise fail(where, f"match.{column.source}", str(exc)) from None
        if not template.whole and column.type != "text":
            raise fail(
                where,
                f"match.{column.source}",
                f"a template with literal text matches S values, but key column "
                f"{column.name!r} is {column.type}",
            )
        out.append(template)
    names = [p for t in out for p in t.placeholders]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise fail(where, "match", f"placeholder(s) {repeated} used more than once")
    return tuple(out)


def entity_values(
    where: str, match: Mapping[str, Any], keys: set[str]
) -> tuple[tuple[str, str], ...]:
    """The entity attribute values of a match: every attribute not in ``keys``."""
    out = []
    for attribute, value in match.items():
        if attribute in keys:
            continue
        if not isinstance(attribute, str) or not attribute or not isinstance(value, str):
            raise fail(where, f"match.{attribute}", "an entity attribute's value is a string")
        if _PLACEHOLDER_IN.search(value):
            raise fail(
                where,
                f"match.{attribute}",
                f"an entity attribute's value is literal; placeholders are for key attributes "
                f"(the DynamoDB key is {sorted(keys)})",
            )
        out.append((attribute, value))
    return tuple(out)


def check_placeholder_column(
    where: str, field: str, column: ColumnMapping, template: Template
) -> None:
    """Refuse a placeholder whose type cannot convert a key's text exactly."""
    if template.whole:
        return  # a key column's own conversion (check_key_column checked its type)
    if column.type not in PLACEHOLDER_TYPES:
        why = {
            "numeric": "'7.1' and '7.10' are one numeric value but two keys",
            "bytea": "bytes have no one exact text in a string key",
        }.get(column.type, "its values have no one exact text")
        raise fail(
            where,
            f"{field}.type",
            f"placeholder {column.name!r} cannot be {column.type}: {why} (placeholder types: "
            f"{sorted(PLACEHOLDER_TYPES)})",
        )
