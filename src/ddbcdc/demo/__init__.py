"""The demo: the whole pipeline on the local stack, checked end to end (``ddbcdc demo``).

- :mod:`ddbcdc.demo.run`: stack, migrate, set up, worker, load, compare, report;
- :mod:`ddbcdc.demo.evolve`: the second act, a mapping that gains a column.
"""
