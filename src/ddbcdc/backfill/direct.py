"""Backfill items -> cleansed changes in one step, without writing and parsing their records.

A backfill row is, by definition, its synthesized change record (:mod:`ddbcdc.backfill.records`)
decoded and cleansed. Writing that record only to parse it again cost more than the rest of
the row's way into PostgreSQL, so :class:`DirectInserts` makes the
:class:`~ddbcdc.cleanse.CleanChange` that decoding and cleansing the record would give straight
from the item's attribute map, in the common case: an item that unmarshals, holds a key
attribute and whose row fits its mapping's compiled row function, at a version the pipeline
reads as it is, of a mapping without routes (a routed mapping's rows always take the reference
way: its cleanser picks the route from the record). For anything else it returns None and the
row takes the reference way: its record is synthesized, decoded and cleansed, which decide (a
dead letter then names what is wrong, with the record and where it came from).

:class:`DeferredRecords` holds a batch's records unmade: one is made when the pipeline reads
it (a row the direct way left to the reference one, or a change that becomes a dead letter
when it is applied: the prune floor, a value PostgreSQL refuses), so every dead letter is the
row's synthesized record, replayable with ``ddbcdc dlq replay``.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, overload

from ddbcdc.cleanse import CleanChange, Cleanser
from ddbcdc.decode.attributes import unmarshal
from ddbcdc.decode.envelope import timestamp_us
from ddbcdc.errors import DecodeError, PoisonRecordError
from ddbcdc.pipeline import Pipeline, SourceRecord
from ddbcdc.schema.mapping import TableMapping

__all__ = ["DeferredRecords", "DirectInserts"]


class DirectInserts:
    """The changes of INSERTs of a mapping's items, as the pipeline would make them.

    Args:
        pipeline: the pipeline the changes go to (its cleanser and timestamp unit).
        mapping: the mapping whose source table the items come from.
        key_attributes: the DynamoDB attribute names of the table's key.

    Raises:
        CleanseError: the pipeline has no mapping of that source table.
    """

    def __init__(
        self, pipeline: Pipeline, mapping: TableMapping, key_attributes: Sequence[str]
    ) -> None:
        cleanser = pipeline.cleanser(mapping.source_table)
        self._cleanser = cleanser if isinstance(cleanser, Cleanser) else None
        self._unit = pipeline.timestamp_unit
        self._keys = tuple(key_attributes)
        self._version = -1  # the last version found to be read as it is

    def _exact(self, version_us: int) -> bool:
        """Whether the pipeline reads ``version_us`` as these microseconds."""
        if version_us == self._version:
            return True
        try:
            exact = timestamp_us(version_us, self._unit) == version_us
        except DecodeError:
            return False
        if exact:
            self._version = version_us
        return exact

    def change(self, item: Any, *, version_us: int, event_id: str) -> CleanChange | None:
        """The change of an INSERT of ``item`` (marshalled, parsed from JSON or from boto3)
        at ``version_us`` with ``event_id``, or None: the synthesized record decides."""
        if self._cleanser is None or type(item) is not dict or not self._exact(version_us):
            return None
        try:
            image = unmarshal(item)
            keys = {name: image[name] for name in self._keys if name in image}
            if not keys:
                return None
            return self._cleanser.insert(image, keys, event_id=event_id, version_us=version_us)
        except PoisonRecordError:  # the reference way decides, and names what is wrong
            return None


class DeferredRecords(Sequence[SourceRecord]):
    """``count`` records, record ``i`` made by ``make(i)`` when it is read (each time)."""

    __slots__ = ("_count", "_make")

    def __init__(self, count: int, make: Callable[[int], SourceRecord]) -> None:
        self._count = count
        self._make = make

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> SourceRecord: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[SourceRecord]: ...

    def __getitem__(self, index: int | slice) -> SourceRecord | Sequence[SourceRecord]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._count))]
        if not -self._count <= index < self._count:
            raise IndexError("record index out of range")
        return self._make(index % self._count)
