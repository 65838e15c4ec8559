"""``ddbcdc verify``: compare the table with PostgreSQL key by key, in bounded memory.

1. **Scan** (parallel segments, consistent reads, the read-rate cap): each page is compared
   with the PostgreSQL rows of its keys (one batched SELECT); keys that differ become
   *suspects*, every key scanned goes to a temporary "seen" table. Pages wait in a bounded
   queue, so memory does not depend on the table's size.
2. **Extras**: live rows whose key was not seen (one anti-join in PostgreSQL; of a routed
   mapping, over the DynamoDB keys of every route's rows) are suspects too; a row the mapping
   keeps for an item that is gone is not a live row.
3. **Re-check** (:mod:`ddbcdc.verify.recheck`): a suspect may just be a change the worker
   has not applied yet, or one made after its page was read. Each is read again with a
   consistent BatchGetItem, and compared again once the worker has passed the time of that
   read; only what still differs, with no newer change applied since, is drift.
4. **Repair** (``--repair``): each confirmed difference is written through the versioned
   path with the re-read's request time minus the clock-skew margin as its version: the
   item's image, or a REMOVE when the item is gone.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from ddbcdc.backfill.position import WorkerWatch
from ddbcdc.backfill.records import key_to_json
from ddbcdc.backfill.scan import Page, ReadLimiter, scan_pages
from ddbcdc.progressbar import ProgressBar
from ddbcdc.schema.mapping import TableMapping
from ddbcdc.verify.drift import VerifyOptions, VerifyReport, copy_rows, temp_table
from ddbcdc.verify.recheck import Rechecker, Repairer
from ddbcdc.verify.routed import RoutedRows, describe
from ddbcdc.verify.rows import Rows

__all__ = ["verify_table"]

log = logging.getLogger(__name__)

_DONE = object()


def _seen_table(rows: Rows) -> sa.Table:
    return temp_table("ddbcdc_verify_seen", rows.key_types)


def _suspects_table(rows: Rows) -> sa.Table:
    table = temp_table(
        "ddbcdc_verify_suspects",
        rows.key_types,
        sa.Column("kind", sa.Text),
        sa.Column("round", sa.Integer),
        sa.Column("status", sa.Text),
        sa.Column("image", sa.Text),
        sa.Column("present", sa.Boolean),
        sa.Column("read_us", sa.BigInteger),
    )
    # The re-check walks it in key order, a hundred keys at a time.
    sa.Index("ddbcdc_verify_suspects_key", *[table.c[k] for k in rows.key])
    return table


def _produce(pages: Any, out: queue.Queue[Any], stop: threading.Event) -> None:
    def put(value: Any) -> None:
        while not stop.is_set():
            try:
                out.put(value, timeout=0.2)
                return
            except queue.Full:
                continue

    try:
        for page in pages:
            put(page)
    except BaseException as exc:  # handed to the consumer, which raises it
        put(exc)
    finally:
        put(_DONE)


class _Scanner:
    """Phase 1 and 2: pages compared as they come, then the extras."""

    def __init__(
        self,
        conn: sa.Connection,
        rows: Rows,
        report: VerifyReport,
        options: VerifyOptions,
    ) -> None:
        self.conn = conn
        self.rows = rows
        self.report = report
        self.options = options
        self.seen = _seen_table(rows)
        self.suspects = _suspects_table(rows)
        self.seen.create(conn)
        self.suspects.create(conn)
        conn.commit()

    def compare(self, page: Page) -> None:
        """One page against PostgreSQL: suspects and seen keys, committed."""
        expected: dict[tuple[Any, ...], dict[str, Any]] = {}
        seen = []
        for item in page.items:
            key, row = self.rows.row(item)
            if key is not None:
                seen.append(key)
            if row is None:
                self._unmappable(item)
                continue
            assert key is not None
            expected[key] = row
        actual = self.rows.fetch(self.conn, list(expected))
        suspects = []
        for key, row in expected.items():
            have = actual.get(key)
            if have is None or not self.rows.same(have[0], row):
                kind = "missing" if have is None else "different"
                suspects.append((*key, kind, 0, "new", None, None, None))
        copy_rows(self.conn, self.seen, seen)
        copy_rows(self.conn, self.suspects, suspects)
        self.conn.commit()
        self.report.items += len(page.items)
        self.report.suspects += len(suspects)

    def _unmappable(self, item: dict[str, Any]) -> None:
        self.report.unmappable += 1
        if len(self.report.unmappable_samples) < self.options.samples:
            self.report.unmappable_samples.append(key_to_json(self.rows.maker.keys_of(item)))

    def _live_keys(self) -> sa.Table:
        """The keys of a routed mapping's live rows (every route's table), in a temporary
        table of the connection, page by page."""
        assert isinstance(self.rows, RoutedRows)
        table = temp_table("ddbcdc_verify_live", self.rows.key_types)
        table.create(self.conn)
        for keys in self.rows.live_keys(self.conn):
            copy_rows(self.conn, table, keys)
        return table

    def extras(self) -> None:
        """Live rows whose key no page had: suspects of kind ``extra``."""
        routed = isinstance(self.rows, RoutedRows)
        live = self._live_keys() if routed else self.rows.tables.live
        seen, s = self.seen, self.suspects
        key = self.rows.key
        self.conn.execute(sa.text('ANALYZE "ddbcdc_verify_seen"'))
        unseen = sa.select(sa.literal(1)).where(*[seen.c[k] == live.c[k] for k in key]).exists()
        current = [self.rows.current] if self.rows.current is not None else []
        rows = sa.select(
            *[live.c[k] for k in key],
            sa.literal("extra"),
            sa.literal(0),
            sa.literal("new"),
        ).where(~unseen, *current)
        columns = [*key, "kind", "round", "status"]
        self.conn.execute(sa.insert(s).from_select(columns, rows))
        extra = sa.select(sa.func.count()).select_from(s).where(s.c.kind == "extra")
        self.report.suspects += int(self.conn.execute(extra).scalar() or 0)
        count = sa.select(sa.func.count()).select_from(live).where(*current)
        self.report.rows = int(self.conn.execute(count).scalar() or 0)
        self.conn.commit()


def _segment_pages(
    client: Any, table: str, limiter: ReadLimiter, options: VerifyOptions, segments: range,
    stop: threading.Event,
) -> Iterator[Page]:  # fmt: skip
    for segment in segments:
        yield from scan_pages(
            client,
            table,
            segment=segment,
            total_segments=options.segments,
            start_key=None,
            limiter=limiter,
            page_size=options.page_size,
            stop=stop,
        )


def _producers(
    client: Any,
    table: str,
    limiter: ReadLimiter,
    options: VerifyOptions,
    out: queue.Queue[Any],
    stop: threading.Event,
) -> list[threading.Thread]:
    """``--parallel`` threads (default: one per segment), each scanning every n-th segment."""
    count = min(options.segments, options.parallel or options.segments)
    threads = []
    for first in range(count):
        mine = range(first, options.segments, count)
        pages = _segment_pages(client, table, limiter, options, mine, stop)
        threads.append(
            threading.Thread(
                target=_produce, args=(pages, out, stop), name=f"ddbcdc-verify-{first}", daemon=True
            )
        )
    return threads


def _scan(
    scanner: _Scanner,
    *,
    client: Any,
    table: str,
    limiter: ReadLimiter,
    options: VerifyOptions,
    progress: ProgressBar | None,
) -> None:
    """Phase 1: every segment scanned, each page compared as it comes."""
    stop = threading.Event()
    out: queue.Queue[Any] = queue.Queue(maxsize=2 * min(options.parallel or options.segments, 16))
    threads = _producers(client, table, limiter, options, out, stop)
    for thread in threads:
        thread.start()
    running = len(threads)
    try:
        while running:
            got = out.get()
            if got is _DONE:
                running -= 1
            elif isinstance(got, BaseException):
                raise got
            else:
                scanner.compare(got)
                if progress is not None:
                    progress.update(scanner.report.items)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)


def verify_table(
    mapping: TableMapping,
    *,
    client: Any,
    engine: sa.Engine,
    watch: WorkerWatch,
    options: VerifyOptions,
    repairer: Repairer | None = None,
    progress: ProgressBar | None = None,
) -> VerifyReport:
    """Verify (and with ``repairer``, repair) ``mapping``'s table (see the module doc)."""
    started = time.monotonic()
    rows, expected = describe(client, mapping)
    if progress is not None:
        progress.total = expected or None
    report = VerifyReport(mapping.source_table, mapping.target_table)
    limiter = ReadLimiter(
        max_rcu=options.max_rcu, max_items_per_second=options.max_items_per_second
    )
    with engine.connect() as conn:
        scanner = _Scanner(conn, rows, report, options)
        _scan(
            scanner,
            client=client,
            table=mapping.source_table,
            limiter=limiter,
            options=options,
            progress=progress,
        )
        if progress is not None:
            progress.close()
        scanner.extras()
        Rechecker(
            conn, rows, scanner.suspects, client=client, limiter=limiter, watch=watch,
            options=options, report=report, repairer=repairer,
        ).run()  # fmt: skip
    report.seconds = time.monotonic() - started
    log.info(
        "verify of %s: %d items, %s, %d suspects, %d unconfirmed",
        mapping.source_table,
        report.items,
        report.confirmed,
        report.suspects,
        report.unconfirmed,
    )
    return report
