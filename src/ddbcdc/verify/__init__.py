"""Verify: is the PostgreSQL copy equal to the table, and repair what is not.

- :mod:`ddbcdc.verify.run`: ``ddbcdc verify``: scan the table in segments, compare each page
  with the rows of its keys, find extra rows by an anti-join, in bounded memory;
- :mod:`ddbcdc.verify.drift`: the rows compared and the report;
- :mod:`ddbcdc.verify.recheck`: suspects read again once the worker has passed them, so a
  change made during the run is not drift, and ``--repair`` through the versioned path;
- :mod:`ddbcdc.verify.compare`: a whole table against its copy in memory (the demo, tests).
"""
