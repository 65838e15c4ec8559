"""What ``ddbcdc verify`` is asked and what it reports: its options, the report and its
samples, and the temporary tables of a run.

Suspects (keys whose two sides differed when compared, :mod:`ddbcdc.verify.rows`) and the
keys seen live in temporary tables of the verifying connection, so memory stays bounded
however many there are.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from ddbcdc.decode.render import to_jsonable
from ddbcdc.materialize import staging
from ddbcdc.verify.rows import Row

__all__ = ["KINDS", "Sample", "VerifyOptions", "VerifyReport", "copy_rows", "temp_table"]

KINDS = ("missing", "extra", "different")


@dataclass(frozen=True, slots=True)
class VerifyOptions:
    """How to verify (see ``ddbcdc verify --help``)."""

    segments: int = 4
    parallel: int | None = None
    max_rcu: float | None = None
    max_items_per_second: float | None = None
    page_size: int | None = None
    samples: int = 5
    settle_timeout: float = 120.0
    max_suspects: int = 100_000
    rounds: int = 3


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
        dead_lettered: repairs PostgreSQL refused (a constraint, a value it cannot store):
            dead letters, still drift (``ddbcdc dlq list``).
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
    dead_lettered: int = 0
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
            "dead_lettered": self.dead_lettered,
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
        if self.repaired or self.superseded or self.dead_lettered:
            lines.append(
                f"  repaired {self.repaired}, superseded by newer changes {self.superseded}"
                + (
                    f", dead-lettered {self.dead_lettered} (ddbcdc dlq list)"
                    if self.dead_lettered
                    else ""
                )
            )
        for sample in self.samples:
            detail = sample.to_dict(values=values)
            extra = ""
            if values:
                extra = f" dynamodb={json.dumps(detail['dynamodb'])} "
                extra += f"postgresql={json.dumps(detail['postgresql'])}"
            lines.append(f"  {sample.kind}: {json.dumps(detail['key'])}{extra}")
        return "\n".join(lines)


def temp_table(
    name: str, key_types: Mapping[str, sa.types.TypeEngine[Any]], *extra: sa.Column[Any]
) -> sa.Table:
    """A temporary table of the verifying connection: the key columns (name -> type, in key
    order), then ``extra``."""
    columns = [sa.Column(k, type_) for k, type_ in key_types.items()]
    return sa.Table(name, sa.MetaData(), *columns, *extra, prefixes=["TEMPORARY"])


def copy_rows(conn: sa.Connection, table: sa.Table, rows: Iterable[Sequence[Any]]) -> None:
    """COPY ``rows`` into ``table`` (all its columns, in order)."""
    staging.copy_rows(conn, staging.copy_statement(table), rows)
