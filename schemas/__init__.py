"""The change-record JSON Schema and the shipped table mappings (``tables/``), installed with
the package as ``ddbcdc._schemas`` (see :mod:`ddbcdc.resources`)."""
