"""Shared fixtures: a real PostgreSQL for every test that needs one, never a skip."""

from __future__ import annotations

import contextlib
import functools
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import pytest
import sqlalchemy as sa
from hypothesis import settings

from ddbcdc.local.postgres import TemporaryPostgres
from ddbcdc.migrate.run import upgrade
from ddbcdc.schema.mapping import TableMapping

pytest_plugins = ["stack_fixtures", "iam_fixtures"]

# CI runs the same examples every time (a red build must be reproducible) and has no
# deadline (a loaded machine is slow, not wrong); locally hypothesis explores freely.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """DATABASE_URL when given, else a throwaway cluster started for this test session."""
    given = os.environ.get("DATABASE_URL")
    if given:
        yield given
        return
    with TemporaryPostgres() as pg:
        yield pg.url


@pytest.fixture(scope="session")
def fresh_database(postgres_url: str) -> Callable[..., AbstractContextManager[str]]:
    """A factory of throwaway databases on the session's PostgreSQL, for fixtures of any scope.

    ``with fresh_database("t_name", mappings=...) as url:`` creates a database called
    ``t_name_<8 hex digits>``, migrated to head for ``mappings`` when they are given (empty
    otherwise), yields its URL (password included) and drops it on exit, connections and all.
    With ``icu_locale`` (``"en-US"``) its default collation is that ICU locale's instead of
    the cluster's (C), as in many production databases.
    """
    return functools.partial(_fresh_database, postgres_url)


@contextlib.contextmanager
def _fresh_database(
    postgres_url: str,
    prefix: str,
    *,
    mappings: tuple[TableMapping, ...] | None = None,
    icu_locale: str | None = None,
) -> Iterator[str]:
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    locale = ""
    if icu_locale is not None:
        assert icu_locale.replace("-", "").isalnum()
        locale = f" LOCALE_PROVIDER icu ICU_LOCALE '{icu_locale}' TEMPLATE template0"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"{locale}'))
    url = sa.make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    try:
        if mappings is not None:
            engine = sa.create_engine(url)
            upgrade(engine, mappings)
            engine.dispose()
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()
