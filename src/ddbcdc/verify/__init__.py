"""Verify: is the PostgreSQL copy equal to the table, and repair what is not.

- :mod:`ddbcdc.verify.rows`: the one comparison: an item as the row the worker writes for
  it, a live row read back, equal when every stored column holds the same (mapped and kept
  columns; ``jsonb`` by what it holds);
- :mod:`ddbcdc.verify.run`: ``ddbcdc verify``: scan the table in segments, compare each page
  with the rows of its keys, find extra rows by an anti-join, in bounded memory;
- :mod:`ddbcdc.verify.recheck`: suspects read again once the worker has passed them, so a
  change made during the run is not drift, and ``--repair`` through the versioned path;
- :mod:`ddbcdc.verify.drift`: the options, the report and the temporary tables of a run;
- :mod:`ddbcdc.verify.compare`: the same comparison in one pass, in memory, without the
  re-check (the demo, tests).
"""
