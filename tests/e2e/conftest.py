"""Fixtures of the end-to-end tests: a private local stack and a fresh database per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import pytest
from cluster import MAPPINGS_DIR

from ddbcdc.local.stack import LocalStack
from ddbcdc.schema.mapping import load_mappings


@pytest.fixture
def stack(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalStack]:
    """A local stack on the session's PostgreSQL; this process talks to it as a client.

    Not the session's ``local_stack``: each test needs a ``customers`` table and stream that
    hold nothing but what it wrote.
    """
    with LocalStack(database_url=postgres_url) as running:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
            monkeypatch.setenv(name, running.env[name])
        yield running


@pytest.fixture
def database(fresh_database: Callable[..., AbstractContextManager[str]]) -> Iterator[str]:
    """A fresh, migrated database for this test."""
    with fresh_database("t_e2e", mappings=load_mappings(MAPPINGS_DIR)) as url:
        yield url
