"""pytest plugin: the session's local stack (moto, kinesis-local, bridge) for any test.

Registered from tests/conftest.py, so integration and end-to-end tests share one stack.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ddbcdc.local.stack import LocalStack


@pytest.fixture(scope="session")
def local_stack(postgres_url: str) -> Iterator[LocalStack]:
    """A started :class:`LocalStack` using the session's PostgreSQL.

    Attributes used by tests: ``dynamodb_endpoint``, ``kinesis_endpoint``, ``env`` (the
    ``ddbcdc local env`` variables), ``database_url``, ``settings()`` and ``info``.
    """
    with LocalStack(database_url=postgres_url) as stack:
        yield stack
