"""ddbcdc's Alembic revisions, installed with the package as ``ddbcdc._migrations``.

``ddbcdc migrate`` finds this folder through :func:`ddbcdc.resources.migrations_dir`.
"""
