"""Change records -> validated rows of a mapped table, pure.

For each :class:`~ddbcdc.schema.mapping.TableMapping` a pydantic row model is built once
(:class:`Cleanser`); :meth:`Cleanser.cleanse` turns a :class:`~ddbcdc.decode.ChangeRecord`
into a :class:`CleanChange`: the key, the version, and (for INSERT/MODIFY) the validated row.

Rules per column type (values as :mod:`ddbcdc.decode.attributes` unmarshals them):

- ``bigint``/``integer``/``smallint``: int (or an integral Decimal, or a string holding an
  integer), range-checked.
- ``numeric``: int or Decimal (or a numeric string), exact, never float.
- ``text``: str; an N value (int/Decimal) becomes its exact decimal text. Rules (trim,
  lowercase, uppercase, digits_only) run in order; a value empty after its rules counts as
  absent.
- ``boolean``: bool. ``bytea``: bytes. ``date``: ISO-8601 str. ``timestamptz``: ISO-8601
  str (UTC when no offset) or N epoch seconds, to the microsecond (finer is poison).
  ``jsonb``: any value, stored as exact JSON text (Decimal as written, bytes as base64, sets
  as sorted lists).

Key columns convert exactly (:func:`ddbcdc.cleanse.coerce.key_coercer`): a key value that
would share a row with another DynamoDB key is poison. Text PostgreSQL cannot hold (U+0000,
lone surrogates) is poison too.

An absent (or NULL) attribute takes the column's default, or makes the record poison when
the column is required (key columns always are). Anything that does not fit raises
:class:`~ddbcdc.errors.CleanseError` with the attribute path (``dynamodb.NewImage.phone``),
the column and a reason that names types, never values (``S where numeric expected``).

With ``extra`` in the mapping, an INSERT/MODIFY row also gets its kept columns
(:mod:`ddbcdc.cleanse.kept`): the unmapped attributes and/or the whole item as ``jsonb`` text.

A REMOVE gets its cause (:mod:`ddbcdc.schema.deletes`): ``ttl`` when the record says DynamoDB's
TTL removed the item, ``unknown`` when ddbcdc synthesized it (:data:`SYNTHESIZED_REMOVES`),
else ``user``. When its mapping keeps the row of such a REMOVE (``soft``, ``keep``) and the
record carries the OldImage, the REMOVE also gets the item's last image, cleansed like a new
image (``image``): the kept row then holds what the item last was, whichever change of the key
arrived first. Such an image that does not fit the mapping makes the REMOVE poison, as a new
image would.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Annotated, Any, NamedTuple

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, create_model

from ddbcdc.cleanse.coerce import PY_TYPES, coercer, key_coercer
from ddbcdc.cleanse.kept import Keeper, refusal_reason
from ddbcdc.cleanse.rowfn import compile_row
from ddbcdc.decode.record import ChangeRecord, EventName
from ddbcdc.errors import CleanseError, ConfigurationError
from ddbcdc.schema.deletes import Cause
from ddbcdc.schema.mapping import ColumnMapping, TableMapping

__all__ = [
    "SYNTHESIZED_REMOVES",
    "CleanChange",
    "Cleanser",
    "Version",
    "build_model",
    "cause_of",
    "cleanse_record",
    "missing_image",
    "validate",
    "version_of",
]

#: Event id prefixes of the REMOVEs ddbcdc synthesizes: the repairs of ``ddbcdc verify`` and
#: the lines of an incremental export, imported (:mod:`ddbcdc.backfill.records`) or applied
#: (:mod:`ddbcdc.inputs.exports`). Their cause is unknown.
SYNTHESIZED_REMOVES = ("verify:", "export:", "export-")

#: (approximate_creation_us, sequence number as int or -1 when unknown, event_id): higher wins.
Version = tuple[int, int, str]


class CleanChange(NamedTuple):
    """A change that fits its mapping, ready to materialize.

    Attributes:
        mapping: the table mapping it belongs to.
        event_id: the change's eventID (unique per change).
        event_name: INSERT, MODIFY or REMOVE.
        key: the cleansed key values, in the mapping's key order.
        row: the validated row (column name -> value) for INSERT/MODIFY, None for REMOVE.
        version: the ordering tuple; higher wins.
        approximate_creation_us: epoch microseconds of the change.
        sequence: the sequence number as int, None when unknown.
        cause: why a REMOVE removed the item (None for INSERT/MODIFY).
        image: a REMOVE's last image (its OldImage, cleansed) when its mapping keeps the
            row of such a REMOVE and the record carries one; else None.
        route: of a routed mapping: the route's table that takes the item (INSERT/MODIFY);
            for a REMOVE, the one its record names (its OldImage, or a key only one route
            can have), None when only PostgreSQL knows (:mod:`ddbcdc.cleanse.routes`).
        route_keys: of a routed mapping: per route, the item's key in that route's table
            (its templates' placeholders), None where its templates do not match the key.
    """

    mapping: TableMapping
    event_id: str
    event_name: EventName
    key: tuple[Any, ...]
    row: dict[str, Any] | None
    version: Version
    approximate_creation_us: int
    sequence: int | None
    cause: Cause | None = None
    image: dict[str, Any] | None = None
    route: str | None = None
    route_keys: Sequence[tuple[Any, ...] | None] = ()


def cause_of(record: ChangeRecord) -> Cause:
    """Why a REMOVE removed its item (see the module doc)."""
    if record.is_ttl_delete:
        return "ttl"
    return "unknown" if record.event_id.startswith(SYNTHESIZED_REMOVES) else "user"


def version_of(record: ChangeRecord) -> tuple[Version, int | None]:
    """The version tuple of a record and its sequence number as int (None when unknown)."""
    seq_text = record.sequence_number
    seq = int(seq_text) if seq_text is not None and seq_text.isdigit() else None
    return (record.approximate_creation_us, -1 if seq is None else seq, record.event_id), seq


def _coercer(column: ColumnMapping, key: tuple[str, ...]) -> Callable[[Any], Any]:
    return key_coercer(column) if column.name in key else coercer(column)


def _field(column: ColumnMapping, key: tuple[str, ...]) -> tuple[Any, Any]:
    coerce = _coercer(column, key)

    def before(value: Any) -> Any:
        return None if value is None else coerce(value)

    py_type = PY_TYPES[column.type]
    if column.required:
        return Annotated[py_type, BeforeValidator(before)], Field(...)
    annotated = Annotated[py_type | None, BeforeValidator(before)]  # type: ignore[valid-type]
    return annotated, Field(default=None)


def build_model(
    name: str, columns: tuple[ColumnMapping, ...], key: tuple[str, ...]
) -> type[BaseModel]:
    fields: dict[str, Any] = {c.name: _field(c, key) for c in columns}
    config = ConfigDict(frozen=True, strict=True, extra="forbid")
    model: type[BaseModel] = create_model(name, __config__=config, **fields)
    return model


def _error_message(exc: ValidationError) -> tuple[str, str]:
    field, message, _ = _error_parts(exc)
    return field, message


def _error_parts(exc: ValidationError) -> tuple[str, str, Any]:
    """(field, message, the value refused, or None when there was none)."""
    first = exc.errors(include_url=False)[0]
    field = str(first["loc"][0]) if first["loc"] else ""
    if first["type"] == "missing":
        return field, "required attribute is missing", None
    message = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] in ("none_required", "int_type", "string_type") and first["input"] is None:
        message = "required attribute is null or empty"
    return field, message, first.get("input")


def validate(
    model: type[BaseModel],
    values: dict[str, Any],
    image: str,
    record: ChangeRecord,
    target: str,
    by_name: dict[str, ColumnMapping],
) -> dict[str, Any]:
    """``values`` through the pydantic ``model`` of table ``target``: the row, or the
    :class:`~ddbcdc.errors.CleanseError` naming the attribute path, column and reason."""
    try:
        row: dict[str, Any] = model.model_validate(values).__dict__
        return row
    except ValidationError as exc:
        field, message, value = _error_parts(exc)
        column = by_name.get(field)
        source = column.source if column else field
        raise CleanseError(
            f"{target}.{field}: {message}",
            path=f"dynamodb.{image}.{source}",
            shard_id=record.shard_id,
            sequence_number=record.sequence_number,
            column=field or None,
            reason=refusal_reason(column.type if column else None, message, value),
            table=target,
        ) from exc


def missing_image(record: ChangeRecord) -> CleanseError:
    """The error of an INSERT or MODIFY that carries no NewImage."""
    return CleanseError(
        f"{record.event_name} without a new image",
        path="dynamodb.NewImage",
        shard_id=record.shard_id,
        sequence_number=record.sequence_number,
        reason=f"{record.event_name} without a new image",
    )


class Cleanser:
    """Cleanses records of one mapping with a row model built once from it.

    Rows are built by a function compiled from the mapping (:mod:`ddbcdc.cleanse.rowfn`:
    the common case of each column inline, the column's coercer otherwise); the pydantic row
    model (the same coercers as validators) names what is wrong when a record does not fit.

    Args:
        mapping: the table mapping.

    Raises:
        ConfigurationError: a column default that its own column rejects.
    """

    #: The table of the items no route takes: a plain mapping has no routes.
    unmatched: str | None = None

    def __init__(self, mapping: TableMapping) -> None:
        self.mapping = mapping
        label = "".join(p.capitalize() for p in mapping.target_table.split("_")) or "Table"
        self.row_model = build_model(f"{label}Row", mapping.columns, mapping.key)
        self._key_model = build_model(f"{label}Key", mapping.key_columns, mapping.key)
        self._sources = tuple((c.name, c.source) for c in mapping.columns)
        self._key_sources = tuple((c.name, c.source) for c in mapping.key_columns)
        self._defaults = {c.name: c.default for c in mapping.columns if c.default is not None}
        self._by_name = {c.name: c for c in mapping.columns}
        self._row_fn = compile_row(mapping.columns, mapping.key, "NewImage")
        self._old_fn = compile_row(mapping.columns, mapping.key, "OldImage")
        self._policy = None if mapping.policy.hard else mapping.policy
        self._key_fn = compile_row(mapping.key_columns, mapping.key, "Keys")
        take = operator.itemgetter(*mapping.key)
        self._key_of: Callable[[dict[str, Any]], tuple[Any, ...]] = (
            take if len(mapping.key) > 1 else lambda row: (take(row),)
        )
        keeps = mapping.extra_column is not None or mapping.item_column is not None
        self._keeper = Keeper(mapping) if keeps else None
        self._check_defaults()

    def _check_defaults(self) -> None:
        defaulted = tuple(c for c in self.mapping.columns if c.default is not None)
        if not defaulted:
            return
        model = build_model("Defaults", defaulted, self.mapping.key)
        try:
            model.model_validate(self._defaults)
        except ValidationError as exc:
            field, message = _error_message(exc)
            where = self.mapping.path or self.mapping.name
            raise ConfigurationError(
                f"table mapping {where}: field 'columns.{field}.default': {message}"
            ) from exc

    def _validate(
        self, model: type[BaseModel], values: dict[str, Any], image: str, record: ChangeRecord
    ) -> dict[str, Any]:
        return validate(model, values, image, record, self.mapping.target_table, self._by_name)

    def validate_row(self, record: ChangeRecord, image_name: str = "NewImage") -> dict[str, Any]:
        """The row of an INSERT/MODIFY (or of the image ``image_name``) through the pydantic row
        model (the reference path), kept columns included.

        Raises:
            CleanseError: as :meth:`cleanse`.
        """
        given = record.new_image if image_name == "NewImage" else record.old_image
        image, keys = given or {}, record.keys
        values = dict(self._defaults)
        for name, source in self._sources:
            value = image.get(source)
            if value is None:
                value = keys.get(source) if name in self.mapping.key else None
            if value is not None:
                values[name] = value
        row = self._validate(self.row_model, values, image_name, record)
        if self._keeper is not None:
            row = dict(row)
            self._keeper.add(row, image, record, image_name)
        return row

    def _last_image(self, record: ChangeRecord, cause: Cause) -> dict[str, Any] | None:
        """A REMOVE's OldImage as a row, when its mapping keeps the row (else None)."""
        image = record.old_image
        if image is None or self._policy is None or self._policy.mode(cause) == "hard":
            return None
        row = self._old_fn(image, record.keys)
        if row is None:
            return self.validate_row(record, "OldImage")
        if self._keeper is not None:
            self._keeper.add(row, image, record, "OldImage")
        return row

    def validate_key(self, record: ChangeRecord) -> dict[str, Any]:
        """The key columns of a record's Keys through the pydantic key model.

        Raises:
            CleanseError: as :meth:`cleanse`.
        """
        keys = record.keys
        values = {n: keys[s] for n, s in self._key_sources if s in keys}
        return self._validate(self._key_model, values, "Keys", record)

    def key_of(self, record: ChangeRecord) -> tuple[Any, ...]:
        """The key columns of a record's Keys, in key order.

        Raises:
            CleanseError: a key attribute missing or not converting exactly.
        """
        keys = record.keys
        key_row = self._key_fn(keys, keys)
        if key_row is None:
            key_row = self.validate_key(record)
        return self._key_of(key_row)

    def cleanse(self, record: ChangeRecord) -> CleanChange:
        """Turn one change record into a :class:`CleanChange`.

        Raises:
            CleanseError: missing key, wrong type or unparseable value, with the path.
        """
        keys = record.keys
        cause: Cause | None = None
        last: dict[str, Any] | None = None
        if record.event_name == "REMOVE":
            row = None
            key_row = self._key_fn(keys, keys)
            if key_row is None:
                key_row = self.validate_key(record)
            cause = cause_of(record)
            if self._policy is not None:
                last = self._last_image(record, cause)
        else:
            image = record.new_image
            if image is None:
                raise missing_image(record)
            row = self._row_fn(image, keys)
            if row is None:
                row = self.validate_row(record)
            elif self._keeper is not None:
                self._keeper.add(row, image, record)
            key_row = row
        us, seq_text = record.approximate_creation_us, record.sequence_number
        seq = int(seq_text) if seq_text is not None and seq_text.isdigit() else None
        return CleanChange(
            self.mapping,
            record.event_id,
            record.event_name,
            self._key_of(key_row),
            row,
            (us, -1 if seq is None else seq, record.event_id),  # as version_of gives it
            us,
            seq,
            cause,
            last,
        )

    def insert(
        self, image: dict[str, Any], keys: dict[str, Any], *, event_id: str, version_us: int
    ) -> CleanChange | None:
        """What :meth:`cleanse` gives an INSERT of ``image`` (unmarshalled) with ``keys``,
        ``event_id`` and ``version_us`` and no sequence number, when its row fits the
        compiled row function; None otherwise (cleansing the record itself then says why).

        A backfill row made straight from its item takes this, without a record.
        """
        row = self._row_fn(image, keys)
        if row is None:
            return None
        if self._keeper is not None:
            try:
                self._keeper.add(row, image, None)
            except CleanseError:
                return None
        version = (version_us, -1, event_id)
        return CleanChange(
            self.mapping, event_id, "INSERT", self._key_of(row), row, version, version_us, None
        )


def cleanse_record(record: ChangeRecord, mapping: TableMapping) -> CleanChange:
    """Cleanse one record against ``mapping`` (builds the row model each call: use
    :class:`Cleanser` for streams)."""
    return Cleanser(mapping).cleanse(record)
