"""What ``ddbcdc verify`` compares and reports: rows, keys, suspects and the report.

Both sides are compared as PostgreSQL rows: a DynamoDB item is cleansed through the table's
mapping (as the worker would write it), a PostgreSQL row is read back, jsonb values parsed on
both sides. Suspects (keys whose two sides differed when compared) live in a temporary table
of the verifying connection, so memory stays bounded however many there are.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from ddbcdc.backfill.records import RecordMaker
from ddbcdc.cleanse import Cleanser
from ddbcdc.decode.record import decode_record
from ddbcdc.decode.render import to_jsonable
from ddbcdc.errors import ConfigurationError, PoisonRecordError
from ddbcdc.materialize import staging
from ddbcdc.schema.mapping import TableMapping
from ddbcdc.schema.tables import MappedTables

__all__ = [
    "KINDS",
    "Rows",
    "Sample",
    "VerifyReport",
    "copy_rows",
    "dynamodb_key",
    "temp_table",
]

Key = tuple[Any, ...]
Row = dict[str, Any]
KINDS = ("missing", "extra", "different")
#: Keys per SELECT (a page of small items can hold more keys than one statement may bind).
_PER_QUERY = 5000


@dataclass(frozen=True, slots=True)
class Sample:
    """One confirmed difference, for the report."""

    kind: str
    key: dict[str, Any]
    source: Row | None = None
    target: Row | None = None

    def to_dict(self, *, values: bool) -> dict[str, Any]:
        """JSON-ready; the rows only with ``values``."""
        out: dict[str, Any] = {"kind": self.kind, "key": to_jsonable(self.key)}
        if values:
            out["dynamodb"] = to_jsonable(self.source)
            out["postgresql"] = to_jsonable(self.target)
        return out


@dataclass
class VerifyReport:
    """The outcome of ``ddbcdc verify``.

    Attributes:
        items: DynamoDB items scanned.
        rows: live PostgreSQL rows at the end of the scan.
        confirmed: confirmed differences by kind (missing, extra, different).
        suspects: keys that differed when first compared.
        changed: suspects that matched on re-check (they changed during the run).
        unsettled: suspects still changing after every re-check round (not drift).
        unconfirmed: suspects not re-checked (the worker did not pass their read in time,
            or more than ``--max-suspects``): counted as drift, since equality is unproven.
        unmappable: items the mapping cannot hold (the worker dead-letters those).
        repaired: confirmed differences fixed (``--repair``).
        superseded: repairs that lost to a newer change of their key (nothing to fix).
    """

    source_table: str
    target_table: str
    items: int = 0
    rows: int = 0
    confirmed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    suspects: int = 0
    changed: int = 0
    unsettled: int = 0
    unconfirmed: int = 0
    unmappable: int = 0
    repaired: int = 0
    superseded: int = 0
    samples: list[Sample] = field(default_factory=list)
    unmappable_samples: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def drift(self) -> bool:
        """Whether the copy differs (or could not be shown equal)."""
        return bool(sum(self.confirmed.values()) or self.unconfirmed)

    def to_dict(self, *, values: bool = False) -> dict[str, Any]:
        """JSON-ready (``--json``)."""
        rate = self.items / self.seconds if self.seconds > 0 else 0.0
        return {
            "source_table": self.source_table,
            "target_table": self.target_table,
            "drift": self.drift,
            "items": self.items,
            "rows": self.rows,
            **self.confirmed,
            "suspects": self.suspects,
            "changed_during_run": self.changed,
            "unsettled": self.unsettled,
            "unconfirmed": self.unconfirmed,
            "unmappable": self.unmappable,
            "repaired": self.repaired,
            "superseded": self.superseded,
            "samples": [s.to_dict(values=values) for s in self.samples],
            "unmappable_samples": to_jsonable(self.unmappable_samples),
            "seconds": round(self.seconds, 3),
            "items_per_second": round(rate, 1),
        }

    def text(self, *, values: bool = False) -> str:
        """For people."""
        c = self.confirmed
        lines = [
            f"{self.source_table} -> {self.target_table}: {self.items} items, {self.rows} rows; "
            f"{c['missing']} missing, {c['extra']} extra, {c['different']} different"
            + (f", {self.unconfirmed} unconfirmed" if self.unconfirmed else ""),
            f"  suspects {self.suspects}: {self.changed} changed during the run, "
            f"{self.unsettled} still changing; unmappable items {self.unmappable}",
        ]
        if self.repaired or self.superseded:
            lines.append(
                f"  repaired {self.repaired}, superseded by newer changes {self.superseded}"
            )
        for sample in self.samples:
            detail = sample.to_dict(values=values)
            extra = ""
            if values:
                extra = f" dynamodb={json.dumps(detail['dynamodb'])} "
                extra += f"postgresql={json.dumps(detail['postgresql'])}"
            lines.append(f"  {sample.kind}: {json.dumps(detail['key'])}{extra}")
        return "\n".join(lines)


class Rows:
    """Item -> row and key conversions of one mapping and table."""

    def __init__(
        self, mapping: TableMapping, tables: MappedTables, attributes: Mapping[str, str]
    ) -> None:
        self.mapping = mapping
        self.tables = tables
        self.names = [c.name for c in mapping.columns]
        self.key = list(mapping.key)
        self.sources = [c.source for c in mapping.key_columns]
        if set(self.sources) != set(attributes):
            raise ConfigurationError(
                f"mapping {mapping.name}: key {self.sources} is not the key of DynamoDB table "
                f"{mapping.source_table} ({sorted(attributes)}): verify needs them equal"
            )
        self.types = dict(attributes)  # attribute -> S | N | B
        self.maker = RecordMaker(mapping, self.sources)
        self.cleanser = Cleanser(mapping)
        self._json = [c.name for c in mapping.columns if c.type == "jsonb"]

    def _cleanse(self, data: bytes) -> Any:
        record = decode_record(data, timestamp_unit="us")
        return self.cleanser.cleanse(record)

    def row(self, item: Mapping[str, Any]) -> tuple[Key | None, Row | None]:
        """(key, row) of a marshalled item; row None when the mapping cannot hold it (key
        None too when even its key does not fit)."""
        try:
            change = self._cleanse(self.maker.put(item, version_us=0, event_id="verify").data)
            return change.key, self.normal(change.row)
        except PoisonRecordError:
            pass
        try:
            keys = self.maker.keys_of(item)
            return self._cleanse(self.maker.remove(keys, version_us=0, event_id="v").data).key, None
        except PoisonRecordError:
            return None, None

    def normal(self, row: Mapping[str, Any] | None) -> Row | None:
        """A cleansed row as compared: its jsonb text parsed as the driver parses jsonb."""
        if row is None:
            return None
        out = {name: row[name] for name in self.names}
        for name in self._json:
            if out[name] is not None:
                out[name] = json.loads(out[name])
        return out

    def key_dict(self, key: Key) -> dict[str, Any]:
        """A key as column -> value."""
        return dict(zip(self.key, key, strict=True))

    def _match(self, table: sa.Table, keys: Sequence[Key]) -> sa.ColumnElement[bool]:
        if len(self.key) == 1:
            return table.c[self.key[0]].in_([k[0] for k in keys])
        return sa.tuple_(*[table.c[k] for k in self.key]).in_(list(keys))

    def fetch(self, conn: sa.Connection, keys: Sequence[Key]) -> dict[Key, tuple[Row, int]]:
        """The live rows of ``keys`` with their versions (µs)."""
        live = self.tables.live
        cols = [live.c[n] for n in self.names]
        out: dict[Key, tuple[Row, int]] = {}
        for start in range(0, len(keys), _PER_QUERY):
            match = self._match(live, keys[start : start + _PER_QUERY])
            for result in conn.execute(sa.select(*cols, live.c._ddbcdc_version_us).where(match)):
                row = dict(zip(self.names, result[:-1], strict=True))
                out[tuple(row[k] for k in self.key)] = (row, int(result[-1]))
        return out

    def versions(self, conn: sa.Connection, keys: Sequence[Key]) -> dict[Key, int]:
        """The version (µs) of the newest change applied to each of ``keys``, live or not."""
        ver = self.tables.versions
        cols = [ver.c[k] for k in self.key]
        out: dict[Key, int] = {}
        for start in range(0, len(keys), _PER_QUERY):
            match = self._match(ver, keys[start : start + _PER_QUERY])
            for r in conn.execute(sa.select(*cols, ver.c._ddbcdc_version_us).where(match)):
                out[tuple(r[:-1])] = int(r[-1])
        return out

    def dynamodb_key(self, key: Key) -> dict[str, Any]:
        """A PostgreSQL key -> the DynamoDB key (boto3 form) of the same item."""
        return dynamodb_key(dict(zip(self.sources, key, strict=True)), self.types)


def dynamodb_key(values: Mapping[str, Any], types: Mapping[str, str]) -> dict[str, Any]:
    """Key attribute values -> the marshalled key, typed by the table's attribute types."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        kind = types[name]
        if kind == "B":
            out[name] = {"B": bytes(value)}
        else:
            out[name] = {kind: str(value)}
    return out


def temp_table(
    name: str, tables: MappedTables, key: Sequence[str], *extra: sa.Column[Any]
) -> sa.Table:
    """A temporary table of the verifying connection: the key columns, then ``extra``."""
    live = tables.live
    columns = [sa.Column(k, live.c[k].type) for k in key]
    return sa.Table(name, sa.MetaData(), *columns, *extra, prefixes=["TEMPORARY"])


def copy_rows(conn: sa.Connection, table: sa.Table, rows: Iterable[Sequence[Any]]) -> None:
    """COPY ``rows`` into ``table`` (all its columns, in order)."""
    staging.copy_rows(conn, staging.copy_statement(table), rows)
