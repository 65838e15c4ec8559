"""Mappings that evolve: what ``ddbcdc migrate`` does when a mapping changes under its table.

- :mod:`ddbcdc.migrate.plan`: the mapping against its tables -> steps with their exact DDL
  (additive ones run, destructive ones refused unless allowed);
- :mod:`ddbcdc.migrate.jobs` and :mod:`ddbcdc.migrate.fill`: new columns filled from the
  kept attributes, in resumable batches, through the columns' own coercers;
- :mod:`ddbcdc.migrate.versions`: the mapping each table was migrated to, and the fence
  that keeps every writer to it.

:mod:`ddbcdc.migrate.run` runs them in order.
"""
