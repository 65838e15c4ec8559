"""Shared fixtures: a real PostgreSQL for every test that needs one, never a skip."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from ddbcdc.local.postgres import TemporaryPostgres

pytest_plugins = ["stack_fixtures"]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """DATABASE_URL when given, else a throwaway cluster started for this test session."""
    given = os.environ.get("DATABASE_URL")
    if given:
        yield given
        return
    with TemporaryPostgres() as pg:
        yield pg.url
