"""Fixtures of the end-to-end tests.

``customers``: a ``customers`` table and stream of the test's own on the session's local stack,
and a fresh database for it; what most end-to-end tests need, without starting a stack per
test. ``stack`` and ``database``: a private local stack and a fresh database, for a test that
needs a stack nobody else touches.

Every test here runs in the xdist group ``e2e`` (see tests/conftest.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from cluster import MAPPINGS_DIR, Customers, customers_table

from ddbcdc.local.stack import LocalStack
from ddbcdc.schema.mapping import load_mappings

CLIENT_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")


@pytest.fixture
def customers(
    local_stack: LocalStack,
    fresh_database: Callable[..., AbstractContextManager[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Customers]:
    """A fresh ``customers`` table and stream on the session's stack, and a database for it.

    This process talks to the stack as a client (its credentials in the environment).
    """
    for name in CLIENT_ENV:
        monkeypatch.setenv(name, local_stack.env[name])
    with (
        customers_table(local_stack, tmp_path / "mappings") as made,
        fresh_database("t_e2e", mappings=(made.mapping,)) as url,
    ):
        yield dataclasses.replace(made, database=url)


@pytest.fixture
def stack(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalStack]:
    """A local stack of this test's own on the session's PostgreSQL; this process talks to it
    as a client.

    Not the session's ``local_stack``: for a test whose ``customers`` table and stream must be
    the only ones (``customers`` gives a fresh pair on the shared stack instead).
    """
    with LocalStack(database_url=postgres_url) as running:
        for name in CLIENT_ENV:
            monkeypatch.setenv(name, running.env[name])
        yield running


@pytest.fixture
def database(fresh_database: Callable[..., AbstractContextManager[str]]) -> Iterator[str]:
    """A fresh database migrated for schemas/tables (the ``customers`` mapping)."""
    with fresh_database("t_e2e", mappings=load_mappings(MAPPINGS_DIR)) as url:
        yield url
