"""Infer a table mapping from a sample of a DynamoDB table, for a person to review.

:func:`sample_items` reads up to ``sample`` items with a parallel Scan (``Segment`` /
``TotalSegments``, each segment its share, pages of ``Limit``); :func:`infer_mapping` turns
DescribeTable and the sample into a mapping document:

- key columns from the key schema: ``S`` -> text, ``B`` -> bytea, ``N`` -> bigint when every
  sampled key is an integer within 64 bits, else numeric;
- a column per attribute seen in at least ``min_share`` of the items: integral ``N`` ->
  bigint (numeric beyond 64 bits), other ``N`` -> numeric, ``S`` -> text, ``BOOL`` -> boolean,
  ``B`` -> bytea, ``M``/``L``/sets -> jsonb; an attribute seen with several types is text when
  they are ``S`` and ``N`` (text holds both exactly), else jsonb (which holds anything);
  ``NULL`` values do not count as a type;
- every other attribute (rarer, or whose name makes no column) is left to the ``extra``
  column, which keeps what the columns do not name;
- ``inferred``: what was seen, per attribute (items, share, how often each type) and which
  attributes are mixed or rare: ignored by ddbcdc, there for the review.

Column names are the attribute names in lower-case snake case (``firstName`` ->
``first_name``), made unique; ``source`` names the attribute where they differ.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ddbcdc.decode.attributes import unmarshal_value
from ddbcdc.errors import ConfigurationError, DecodeError
from ddbcdc.schema.mapping import RESERVED_PREFIX, parse_mapping

__all__ = [
    "AttributeStats",
    "attribute_columns",
    "column_name",
    "infer_mapping",
    "key_columns",
    "observe",
    "sample_items",
    "unique_name",
]

_INT64 = (-(2**63), 2**63 - 1)
_SETS = ("SS", "NS", "BS")
_SIMPLE_TYPES = {"S": "text", "BOOL": "boolean", "B": "bytea", "M": "jsonb", "L": "jsonb"}
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NOT_WORD = re.compile(r"[^a-z0-9_]+")
_MAX_NAME = 63


@dataclass
class AttributeStats:
    """What the sample holds for one attribute.

    Attributes:
        name: the attribute name.
        seen: items holding it.
        types: how often each DynamoDB type was seen (``N`` split into ``N`` integers
            within 64 bits and ``N.decimal`` for the others).
    """

    name: str
    seen: int = 0
    types: Counter[str] = field(default_factory=Counter)

    def add(self, value: Mapping[str, Any]) -> None:
        """Count one attribute value (DynamoDB JSON)."""
        self.seen += 1
        self.types[_kind(value)] += 1

    def column_type(self) -> str:
        """The column type for what was seen (see the module doc)."""
        kinds = {k for k in self.types if k != "NULL"}
        numbers = {"N", "N.decimal"}
        if not kinds:
            return "text"
        if kinds <= numbers:
            return "bigint" if kinds == {"N"} else "numeric"
        if kinds <= numbers | {"S"}:
            return "text"
        if len(kinds) == 1:
            (kind,) = kinds
            return "jsonb" if kind in _SETS else _SIMPLE_TYPES[kind]
        return "jsonb"

    def summary(self, items: int) -> dict[str, Any]:
        """The ``inferred`` entry of the attribute."""
        share = round(self.seen / items, 4) if items else 0.0
        return {"items": self.seen, "share": share, "types": dict(self.types.most_common())}


def _kind(value: Mapping[str, Any]) -> str:
    """The type of one DynamoDB JSON value; integral numbers within 64 bits are ``N``."""
    (tag,) = value.keys()
    if tag != "N":
        return str(tag)
    try:
        number = unmarshal_value(value)
    except DecodeError:
        return "N.decimal"
    if isinstance(number, Decimal):
        if not number.is_finite() or number != number.to_integral_value():
            return "N.decimal"
        number = int(number)
    return "N" if _INT64[0] <= number <= _INT64[1] else "N.decimal"


def observe(items: Iterable[Mapping[str, Any]]) -> tuple[int, dict[str, AttributeStats]]:
    """Count items and, per attribute, how often each type appears (first seen first)."""
    stats: dict[str, AttributeStats] = {}
    count = 0
    for item in items:
        count += 1
        for name, value in item.items():
            stats.setdefault(name, AttributeStats(name)).add(value)
    return count, stats


def _segment(dynamodb: Any, table: str, segment: int, total: int, quota: int) -> list[Any]:
    items: list[Any] = []
    start: dict[str, Any] | None = None
    while len(items) < quota:
        kwargs: dict[str, Any] = {"Segment": segment, "TotalSegments": total}
        if start is not None:
            kwargs["ExclusiveStartKey"] = start
        page = dynamodb.scan(TableName=table, Limit=min(1000, quota - len(items)), **kwargs)
        items += page.get("Items", [])
        start = page.get("LastEvaluatedKey")
        if start is None:
            break
    return items[:quota]


def sample_items(
    dynamodb: Any, table: str, *, sample: int = 10_000, segments: int = 4
) -> list[dict[str, Any]]:
    """Up to ``sample`` items of ``table`` (DynamoDB JSON), read by a parallel Scan."""
    segments = max(1, min(segments, sample))
    quotas = [sample // segments + (1 if i < sample % segments else 0) for i in range(segments)]
    with ThreadPoolExecutor(max_workers=segments) as pool:
        parts = pool.map(
            lambda i: _segment(dynamodb, table, i, segments, quotas[i]), range(segments)
        )
        return [item for part in parts for item in part]


def column_name(attribute: str) -> str | None:
    """A lower-case identifier for an attribute name, None when none fits."""
    name = _NOT_WORD.sub("_", _CAMEL.sub("_", attribute).lower()).strip("_")
    if not name:
        return None
    if name[0].isdigit():
        name = "a_" + name
    if name.startswith((RESERVED_PREFIX.strip("_"), RESERVED_PREFIX)):
        name = "attr_" + name
    return name[:_MAX_NAME]


def _key_type(attribute_type: str, stats: AttributeStats | None) -> str:
    if attribute_type == "S":
        return "text"
    if attribute_type == "B":
        return "bytea"
    integral = stats is not None and set(stats.types) <= {"N"}
    return "bigint" if integral else "numeric"


def unique_name(name: str, taken: set[str]) -> str:
    """``name``, or ``name_2``, ``name_3``... the first not in ``taken`` (which takes it)."""
    candidate, suffix = name, 2
    while candidate in taken:
        tail = f"_{suffix}"
        candidate, suffix = name[: _MAX_NAME - len(tail)] + tail, suffix + 1
    taken.add(candidate)
    return candidate


def _column(attribute: str, name: str, type_: str, *, key: bool) -> dict[str, Any]:
    column: dict[str, Any] = {"name": name}
    if name != attribute:
        column["source"] = attribute
    column["type"] = type_
    if key:
        column["required"] = True
    return column


def key_columns(
    description: Mapping[str, Any], stats: dict[str, AttributeStats], taken: set[str]
) -> list[dict[str, Any]]:
    """The key columns, from the key schema (see the module doc)."""
    defined = {a["AttributeName"]: a["AttributeType"] for a in description["AttributeDefinitions"]}
    columns = []
    for key in description["KeySchema"]:
        attribute = key["AttributeName"]
        name = column_name(attribute)
        if name is None:
            raise ConfigurationError(f"key attribute {attribute!r} makes no column name")
        type_ = _key_type(defined[attribute], stats.get(attribute))
        columns.append(_column(attribute, unique_name(name, taken), type_, key=True))
    return columns


def attribute_columns(
    stats: dict[str, AttributeStats], count: int, min_share: float, taken: set[str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """(a column per common attribute, the attributes left to the extra column)."""
    columns, left = [], []
    for attribute, seen in stats.items():
        name = column_name(attribute)
        if name is None or (count and seen.seen / count < min_share):
            left.append(attribute)
        else:
            columns.append(
                _column(attribute, unique_name(name, taken), seen.column_type(), key=False)
            )
    return columns, left


def infer_mapping(
    description: Mapping[str, Any],
    items: Iterable[Mapping[str, Any]],
    *,
    target_table: str | None = None,
    extra_column: str = "attributes",
    min_share: float = 0.01,
    change_log: bool = False,
) -> dict[str, Any]:
    """A mapping document for the table ``description`` (DescribeTable's ``Table``) from a
    sample of its items (DynamoDB JSON).

    Raises:
        ConfigurationError: the result is not a valid mapping (a key attribute whose name
            makes no column, say), naming why.
    """
    table = str(description["TableName"])
    count, stats = observe(items)
    taken = {extra_column}
    keys = key_columns(description, stats, taken)
    key_attributes = {k["AttributeName"] for k in description["KeySchema"]}
    rest = {a: s for a, s in stats.items() if a not in key_attributes}
    columns, left = attribute_columns(rest, count, min_share, taken)
    mixed = [a for a, s in stats.items() if len({k for k in s.types if k != "NULL"}) > 1]
    document: dict[str, Any] = {
        "source_table": table,
        "target_table": target_table or column_name(table) or "table",
        "key": [c["name"] for c in keys],
        "change_log": change_log,
        "extra": {"column": extra_column},
        "columns": keys + columns,
        "inferred": {
            "sampled_items": count,
            "table_item_count": description.get("ItemCount"),
            "min_share": min_share,
            "mixed_types": mixed,
            "left_to_extra": left,
            "attributes": {a: s.summary(count) for a, s in stats.items()},
        },
    }
    parse_mapping(document, name=document["target_table"], where=f"inferred from {table}")
    return document
