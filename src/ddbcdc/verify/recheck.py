"""Re-checking suspects of ``ddbcdc verify``, and repairing what is confirmed.

A suspect differed when its page was compared; that proves nothing while changes are in
flight. Per round, for every suspect of the round:

1. **re-read** it with a consistent BatchGetItem (request time ``g``); if PostgreSQL now
   holds the same, it changed during the run: done;
2. once the worker has **passed** the last re-read (:class:`~ddbcdc.backfill.position.WorkerWatch`),
   compare again: the same now, done; PostgreSQL holds a change at or after ``g - margin``:
   the item changed after the re-read, so it goes to the next round; otherwise nothing
   newer than the re-read was applied and every older change was, yet the two differ:
   **confirmed** (missing, extra or different);
3. after the last round, what still changes is *unsettled* (not drift).

:class:`Repairer` writes confirmed differences through the versioned path at version
``g - margin``: the re-read image (an INSERT), or a REMOVE when the item is gone. Every
change applied to the key was older than that (step 2), and a change made later is newer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import orjson
import sqlalchemy as sa

from ddbcdc.aws.throttle import call_with_backoff
from ddbcdc.backfill.feed import Batch, feed
from ddbcdc.backfill.position import WorkerWatch
from ddbcdc.backfill.records import json_default, key_digest, now_us
from ddbcdc.backfill.scan import ReadLimiter
from ddbcdc.pipeline import Pipeline, SourceRecord
from ddbcdc.settings import read_version_us
from ddbcdc.verify.drift import Sample, VerifyOptions, VerifyReport, copy_rows
from ddbcdc.verify.rows import Key, Rows

__all__ = ["Rechecker", "Repairer"]

log = logging.getLogger(__name__)

_CHUNK = 100  # BatchGetItem's limit
_NONE = -(2**63)


class Repairer:
    """Writes repairs through a backfill pipeline (no change log: a repair is not a change)."""

    def __init__(self, pipeline: Pipeline, run_id: str) -> None:
        self.pipeline = pipeline
        self.run_id = run_id

    def apply(self, records: list[SourceRecord]) -> tuple[int, int, int]:
        """Apply repairs; (repaired, superseded by a newer change, dead-lettered)."""
        result = feed(self.pipeline, iter([Batch(records)]))
        return result.upserted + result.deleted, result.stale, result.dead_lettered


class Rechecker:
    """Runs the rounds over the suspects table of the verifying connection."""

    def __init__(
        self,
        conn: sa.Connection,
        rows: Rows,
        suspects: sa.Table,
        *,
        client: Any,
        limiter: ReadLimiter,
        watch: WorkerWatch,
        options: VerifyOptions,
        report: VerifyReport,
        repairer: Repairer | None,
    ) -> None:
        self.conn = conn
        self.rows = rows
        self.table = suspects
        self.client = client
        self.limiter = limiter
        self.watch = watch
        self.options = options
        self.report = report
        self.repairer = repairer
        self.margin = watch.margin_us
        self._key_cols = [suspects.c[k] for k in rows.key]

    def run(self) -> None:
        """Every round, then the leftovers counted as unsettled."""
        self._cap()
        for round_ in range(self.options.rounds):
            newest = self._reread(round_)
            if newest is None:
                break
            if not self.watch.wait_passed(newest, timeout=self.options.settle_timeout):
                self.report.unconfirmed += self._drop(round_)
                break
            self._confirm(round_)
        self.report.unsettled += self._drop(self.options.rounds)
        self.conn.commit()

    def _cap(self) -> None:
        total = self.report.suspects
        if total > self.options.max_suspects:
            over = total - self.options.max_suspects
            log.warning("%d suspects, more than --max-suspects: %d not re-checked", total, over)
            s = self.table
            keep = (
                sa.select(*self._key_cols)
                .order_by(*self._key_cols)
                .limit(self.options.max_suspects)
            )
            self.conn.execute(sa.delete(s).where(sa.tuple_(*self._key_cols).not_in(keep)))
            self.report.unconfirmed += over

    def _drop(self, round_: int) -> int:
        s = self.table
        left = s.c.round >= round_
        count = int(self.conn.execute(sa.select(sa.func.count()).where(left)).scalar() or 0)
        self.conn.execute(sa.delete(s).where(left))
        return count

    def _chunks(self, round_: int, status: str) -> Iterator[list[Any]]:
        """The suspects of a round in key order, a chunk at a time (keyset pagination)."""
        s = self.table
        last: Key | None = None
        while True:
            query = sa.select(s).where(s.c.round == round_, s.c.status == status)
            if last is not None:
                query = query.where(sa.tuple_(*self._key_cols) > sa.tuple_(*last))
            chunk = list(self.conn.execute(query.order_by(*self._key_cols).limit(_CHUNK)))
            if not chunk:
                return
            last = tuple(getattr(chunk[-1], k) for k in self.rows.key)
            yield chunk

    def _keys_of(self, chunk: Sequence[Any]) -> list[Key]:
        return [tuple(getattr(r, k) for k in self.rows.key) for r in chunk]

    def _batch_get(self, keys: Sequence[Key]) -> tuple[dict[Key, dict[str, Any]], int, int]:
        """Consistent re-reads: (items by key, request time, time after the last answer)."""
        name = self.rows.mapping.source_table
        wanted = [self.rows.dynamodb_key(k) for k in keys]
        found: dict[Key, dict[str, Any]] = {}
        requested = now_us()
        while wanted:
            response = call_with_backoff(
                self.client.batch_get_item,
                f"BatchGetItem on {name}",
                RequestItems={name: {"Keys": wanted, "ConsistentRead": True}},
                ReturnConsumedCapacity="TOTAL",
            )
            items = response.get("Responses", {}).get(name, [])
            for item in items:
                key, _ = self.rows.row(item)
                if key is not None:
                    found[key] = item
            consumed = sum(
                float(c.get("CapacityUnits") or 0) for c in response.get("ConsumedCapacity") or []
            )
            self.limiter.spend(items=len(items), consumed=consumed)
            wanted = response.get("UnprocessedKeys", {}).get(name, {}).get("Keys", [])
        return found, requested, now_us()

    def _reread(self, round_: int) -> int | None:
        """Step 1 for every suspect of the round; the newest re-read time (None: none left)."""
        newest: int | None = None
        for chunk in self._chunks(round_, "new"):
            keys = self._keys_of(chunk)
            found, requested, answered = self._batch_get(keys)
            actual = self.rows.fetch(self.conn, keys)
            pending = []
            for row, key in zip(chunk, keys, strict=True):
                item = found.get(key)
                image = self.rows.row(item)[1] if item is not None else None
                if item is not None and image is None:
                    self.report.unmappable += 1
                    continue
                have = actual.get(key)
                if self.rows.same(have[0] if have else None, image):
                    self.report.changed += 1
                    continue
                text = None if item is None else orjson.dumps(item, default=json_default).decode()
                pending.append(
                    (*key, row.kind, round_, "pending", text, item is not None, requested)
                )
            self._replace(keys, pending)
            newest = answered if pending else newest
        return newest

    def _replace(self, keys: Sequence[Key], rows: Sequence[Sequence[Any]]) -> None:
        s = self.table
        self.conn.execute(sa.delete(s).where(sa.tuple_(*self._key_cols).in_(list(keys))))
        copy_rows(self.conn, s, rows)
        self.conn.commit()

    def _confirm(self, round_: int) -> None:
        """Step 2 for the pending suspects of the round."""
        for chunk in self._chunks(round_, "pending"):
            keys = self._keys_of(chunk)
            actual = self.rows.fetch(self.conn, keys)
            versions = self.rows.versions(self.conn, keys)
            retry, repairs = [], []
            for row, key in zip(chunk, keys, strict=True):
                item = orjson.loads(row.image) if row.image is not None else None
                image = self.rows.row(item)[1] if item is not None else None
                have = actual.get(key)
                if self.rows.same(have[0] if have else None, image):
                    self.report.changed += 1
                elif versions.get(key, _NONE) >= read_version_us(row.read_us, self.margin):
                    retry.append((*key, row.kind, round_ + 1, "new", None, None, None))
                else:
                    kind = "missing" if have is None else "extra" if image is None else "different"
                    self._confirmed(kind, key, image, have[0] if have else None)
                    repairs.append(self._repair(key, item, row.read_us))
            self._replace(keys, retry)
            if self.repairer is not None and repairs:
                repaired, superseded, refused = self.repairer.apply(repairs)
                self.report.repaired += repaired
                self.report.superseded += superseded
                self.report.dead_lettered += refused

    def _confirmed(self, kind: str, key: Key, source: Any, target: Any) -> None:
        self.report.confirmed[kind] += 1
        shown = sum(1 for s in self.report.samples if s.kind == kind)
        if shown < self.options.samples:
            self.report.samples.append(Sample(kind, self.rows.key_dict(key), source, target))

    def _repair(self, key: Key, item: dict[str, Any] | None, read_us: int) -> SourceRecord:
        version = read_version_us(read_us, self.margin)
        keys = self.rows.dynamodb_key(key)
        marker = f"verify:{self.repairer.run_id if self.repairer else ''}:{key_digest(keys)}"
        if item is None:
            return self.rows.maker.remove(keys, version_us=version, event_id=marker, where="verify")
        return self.rows.maker.put(item, version_us=version, event_id=marker, where="verify")
