"""Backfill: the items a table already holds, into PostgreSQL, and proof that the copy holds.

The stage beside decode -> cleanse -> materialize that feeds the same versioned path from
other sources than the stream:

- :mod:`~ddbcdc.backfill.snapshot`: a parallel, consistent, rate-capped, resumable Scan
  (``ddbcdc snapshot``); :mod:`~ddbcdc.backfill.scan` reads the pages;
- :mod:`~ddbcdc.backfill.export` and :mod:`~ddbcdc.backfill.importer`: DynamoDB exports, full
  and incremental, checked and resumable per data file (``ddbcdc snapshot --from-export``);
  :mod:`~ddbcdc.backfill.exporter` requests one (``ddbcdc export``);
- :mod:`~ddbcdc.verify.run`, :mod:`~ddbcdc.verify.recheck`: ``ddbcdc verify
  [--repair]``, with :mod:`~ddbcdc.backfill.position` telling when the worker has passed a
  time;
- :mod:`~ddbcdc.backfill.records`: items -> synthesized change records (the one way rows get
  in), :mod:`~ddbcdc.backfill.feed`: records -> the pipeline, :mod:`~ddbcdc.backfill.state`:
  runs, segments and prune holds, :mod:`~ddbcdc.backfill.preconditions`: what must hold first.

docs/backfill-and-verify.md has the correctness argument.
"""
