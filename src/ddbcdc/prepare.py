"""The pure half of a batch: raw records -> decoded, cleansed and planned, no I/O.

:class:`Preparer` decodes every record of a batch, cleanses it with its source table's
cleanser and plans the changes per target table (:class:`~ddbcdc.batches.PreparedBatch`).
A record that fails either stage, for an expected reason or not, becomes a dead letter with
its raw bytes and position; it never fails the batch. :class:`~ddbcdc.pipeline.Pipeline`
runs the other half, the transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Literal

from ddbcdc.batches import PreparedBatch, SourceRecord
from ddbcdc.cleanse import CleanChange, Cleanser
from ddbcdc.cleanse.routes import NO_ROUTE, RoutedCleanser, cleanser_for
from ddbcdc.decode.record import decode_record
from ddbcdc.errors import CleanseError, ConfigurationError, PoisonRecordError
from ddbcdc.materialize import TablePlan
from ddbcdc.materialize.deadletters import DeadLetter, dead_letter
from ddbcdc.schema.mapping import TableMapping

__all__ = ["Preparer", "letter_of"]

Stage = Literal["decode", "cleanse", "apply"]
TimestampUnit = Literal["auto", "s", "ms", "us"]


def letter_of(
    stage: Stage,
    text: str,
    source: SourceRecord,
    table_name: str | None,
    target: str | None,
    version: int | None,
    poison: PoisonRecordError | None = None,
) -> DeadLetter:
    """The dead letter of ``source``, failed at ``stage`` for the reason ``text``."""
    return dead_letter(
        stage,
        text,
        poison,
        payload=bytes(source.data),
        source_table=table_name,
        target_table=target,
        shard_id=source.shard_id,
        sequence_number=source.sequence_number,
        partition_key=source.partition_key,
        version_us=version,
    )


class Preparer:
    """Decode and cleanse batches for a set of mappings.

    Args:
        mappings: the table mappings (at least one).
        plan: collapses and stages the changes per target table (the materializer's).
        timestamp_unit: passed to :func:`ddbcdc.decode.record.decode_record`.
        source_table: the table of records that do not name theirs (a DynamoDB stream's
            records carry no table name); by default the only mapping's, when there is one.
    """

    def __init__(
        self,
        mappings: Sequence[TableMapping],
        *,
        plan: Callable[[Sequence[CleanChange]], Iterable[TablePlan]],
        timestamp_unit: TimestampUnit = "auto",
        source_table: str | None = None,
    ) -> None:
        self.timestamp_unit: TimestampUnit = timestamp_unit
        self._plan = plan
        self._cleansers: dict[str, Cleanser | RoutedCleanser] = {
            m.source_table: cleanser_for(m) for m in mappings
        }
        self._only = self._cleansers[mappings[0].source_table] if len(mappings) == 1 else None
        if source_table is not None:
            self._only = self._cleansers.get(source_table)
            if self._only is None:
                known = ", ".join(sorted(self._cleansers))
                raise ConfigurationError(
                    f"no table mapping for the stream's table {source_table!r} (mapped: {known})"
                )

    def cleanser(self, table_name: str | None) -> Cleanser | RoutedCleanser:
        """The cleanser of records of source table ``table_name`` (None: the one mapping's).

        Raises:
            CleanseError: no mapping has that source table (naming those that are mapped).
        """
        cleanser = self._cleansers.get(table_name) if table_name is not None else self._only
        if cleanser is None:
            known = ", ".join(sorted(self._cleansers))
            raise CleanseError(
                f"no table mapping for source table {table_name!r} (mapped: {known})",
                path="tableName",
            )
        return cleanser

    def prepare(
        self,
        records: Sequence[SourceRecord],
        *,
        cleansed: Sequence[CleanChange | None] | None = None,
    ) -> PreparedBatch:
        """Decode, cleanse and plan a batch. Safe to run in another thread than the apply.

        ``cleansed``: per record, the change decoding and cleansing it gives, when the
        caller made that already (a backfill row made straight from its item), else None;
        only the records without one are read and decoded here.
        """
        prepared = PreparedBatch(records, [], {}, [], [])
        todo: Iterable[int] = range(len(records))
        if cleansed is not None:
            todo = [i for i, change in enumerate(cleansed) if change is None]
            for index, change in enumerate(cleansed):
                if change is not None:
                    prepared.sources[id(change)] = index
                    prepared.changes.append(change)
        self._take_all(prepared, records, todo)
        prepared.plan.extend(self._plan(prepared.changes))
        return prepared

    def _take_all(
        self, prepared: PreparedBatch, records: Sequence[SourceRecord], todo: Iterable[int]
    ) -> None:
        """:meth:`_take` of every record of ``todo``, the common case inline: a record that
        decodes and cleanses costs no more calls than those two. Any other is taken again by
        :meth:`_take`, which says why (decoding and cleansing are pure)."""
        unit, cleansers, only = self.timestamp_unit, self._cleansers, self._only
        sources, append = prepared.sources, prepared.changes.append
        for index in todo:
            source = records[index]
            try:
                record = decode_record(
                    source.data,
                    timestamp_unit=unit,
                    shard_id=source.shard_id,
                    sequence_number=source.sequence_number,
                )
                name = record.table_name
                cleanser = only if name is None else cleansers[name]
                change = cleanser.cleanse(record)  # type: ignore[union-attr]
            except Exception:  # taken again, for its dead letter
                self._take(prepared, index, source)
                continue
            sources[id(change)] = index
            append(change)
            if change.route is not None:
                _count_unmatched(prepared, cleanser, change)  # type: ignore[arg-type]

    def _take(self, prepared: PreparedBatch, index: int, source: SourceRecord) -> None:
        """Decode and cleanse one record into ``prepared``: a change, or a dead letter."""
        stage: Stage = "decode"
        table_name: str | None = None
        target: str | None = None
        version: int | None = None
        try:
            record = decode_record(
                source.data,
                timestamp_unit=self.timestamp_unit,
                shard_id=source.shard_id,
                sequence_number=source.sequence_number,
            )
            stage, table_name = "cleanse", record.table_name
            version = record.approximate_creation_us
            cleanser = self._cleansers.get(table_name) if table_name is not None else self._only
            if cleanser is None:
                cleanser = self.cleanser(table_name)  # raises, naming what is mapped
            target = cleanser.mapping.target_table
            change = cleanser.cleanse(record)
        except PoisonRecordError as exc:
            exc.with_position(shard_id=source.shard_id, sequence_number=source.sequence_number)
            if isinstance(exc, CleanseError):
                if exc.reason == NO_ROUTE and target is not None:
                    prepared.unmatched[target] = prepared.unmatched.get(target, 0) + 1
                target = exc.table or target  # a route's table
            letter = letter_of(stage, str(exc), source, table_name, target, version, exc)
            prepared.poison.append((index, letter))
            return
        except Exception as exc:  # a bug's or a library's: this record's problem alone
            text = f"unexpected {type(exc).__name__} during {stage}"
            letter = letter_of(stage, text, source, table_name, target, version)
            prepared.poison.append((index, letter))
            return
        prepared.sources[id(change)] = index
        prepared.changes.append(change)
        _count_unmatched(prepared, cleanser, change)


def _count_unmatched(
    prepared: PreparedBatch, cleanser: Cleanser | RoutedCleanser, change: CleanChange
) -> None:
    """Count ``change`` in ``prepared.unmatched`` when it is an item no route takes, kept in
    the catch-all (a plain mapping has no routes: never)."""
    if change.route is not None and change.row is not None and change.route == cleanser.unmatched:
        name = cleanser.mapping.target_table
        prepared.unmatched[name] = prepared.unmatched.get(name, 0) + 1
