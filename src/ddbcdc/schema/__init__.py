"""Schema: what a source table becomes in PostgreSQL, declared once.

- :mod:`ddbcdc.schema.mapping`: table mappings (``schemas/tables/*.json``), loaded and checked;
- :mod:`ddbcdc.schema.tables`: the SQLAlchemy Core tables, bookkeeping and per mapping (live,
  versions, change log): the single source of truth of the schema;
- :mod:`ddbcdc.schema.infer`: a mapping proposed from a sample of a DynamoDB table.

How tables change when a mapping changes is :mod:`ddbcdc.migrate`.
"""
