"""Mappings that evolve: what ``ddbcdc migrate`` does when a mapping changes under its table.

- :mod:`ddbcdc.evolution.plan`: the mapping against its tables -> steps with their exact DDL
  (additive ones run, destructive ones refused unless allowed);
- :mod:`ddbcdc.evolution.backfill`: new columns filled from the kept attributes, in
  resumable batches, through the columns' own coercers;
- :mod:`ddbcdc.evolution.versions`: the mapping each table was migrated to, and the check
  every writer makes before it starts.

:mod:`ddbcdc.migration` runs them in order.
"""
