"""The kept columns of a row: unmapped attributes and the whole item, as ``jsonb`` text.

With ``"extra": {"column": ...}`` every attribute of the new image that no column maps is
kept in that column; with ``"item_column"`` the whole new image is kept. Both use the
lossless encoding of :mod:`ddbcdc.decode.itemjson`. Only the attributes outside the mapping are
encoded for the extra column, so an item the mapping covers costs a set difference.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from ddbcdc.decode.itemjson import KeptValueError, encode_attributes
from ddbcdc.decode.record import ChangeRecord
from ddbcdc.errors import CleanseError
from ddbcdc.schema.mapping import TableMapping

__all__ = ["Keeper", "attribute_type", "refusal_reason"]

_EMPTY = "{}"


def attribute_type(value: Any) -> str:
    """The DynamoDB type of an unmarshalled value (``S``, ``N``, ``SS``, ...)."""
    if isinstance(value, str):
        return "S"
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, int | Decimal):
        return "N"
    if isinstance(value, bytes | bytearray):
        return "B"
    if value is None:
        return "NULL"
    if isinstance(value, Mapping):
        return "M"
    if isinstance(value, set | frozenset):
        kinds = {attribute_type(item) for item in value}
        return kinds.pop() + "S" if len(kinds) == 1 else "set"
    if isinstance(value, list | tuple):
        return "L"
    return type(value).__name__


def refusal_reason(column_type: str | None, message: str, value: Any) -> str:
    """The value-free reason a column refused a value: ``S where numeric expected`` (then
    the coercer's message when it says more than the type)."""
    if column_type is None or value is None:
        return message
    reason = f"{attribute_type(value)} where {column_type} expected"
    return reason if message.startswith("expected") else f"{reason}: {message}"


class Keeper:
    """Adds the kept columns of one mapping to its rows.

    Args:
        mapping: the table mapping (with ``extra_column`` and/or ``item_column``).
        implied: attributes the row holds without a column of their own (a route's key
            attributes and entity attributes: the route and its key columns give them back).
    """

    __slots__ = ("extra", "item", "mapped", "target")

    def __init__(self, mapping: TableMapping, implied: frozenset[str] = frozenset()) -> None:
        self.extra = mapping.extra_column
        self.item = mapping.item_column
        self.mapped = frozenset(c.source for c in mapping.columns) | implied
        self.target = mapping.target_table

    def kept(self, image: Mapping[str, Any]) -> dict[str, Any]:
        """The attributes of ``image`` that no column maps, in image order."""
        unmapped = image.keys() - self.mapped
        if not unmapped:
            return {}
        return {name: value for name, value in image.items() if name in unmapped}

    def add(
        self,
        row: dict[str, Any],
        image: Mapping[str, Any],
        record: ChangeRecord | None,
        name: str = "NewImage",
    ) -> None:
        """Put the kept columns of ``image`` (the record's image called ``name``) into ``row``
        (``record``: the change, named in errors; None for a change made without one).

        Raises:
            CleanseError: an attribute no ``jsonb`` value can hold (with its path).
        """
        column = self.extra
        try:
            if column is not None:
                unmapped = image.keys() - self.mapped
                if unmapped:
                    rest = {n: v for n, v in image.items() if n in unmapped}
                    row[column] = encode_attributes(rest)
                else:
                    row[column] = _EMPTY
            column = self.item
            if column is not None:
                row[column] = encode_attributes(image)
        except KeptValueError as exc:
            raise CleanseError(
                f"{self.target}.{column}: {exc.message}",
                path=f"dynamodb.{name}.{exc.path}",
                shard_id=None if record is None else record.shard_id,
                sequence_number=None if record is None else record.sequence_number,
                column=column,
                reason=exc.message,
            ) from exc
