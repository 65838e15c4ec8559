"""Shared fixtures: a real PostgreSQL for every test that needs one, never a skip.

One cluster serves the whole run, however many pytest-xdist workers share it: the process
that runs pytest starts it (``pytest_configure``) unless every test path is under
``tests/unit``, hands its URL to the workers through ``DDBCDC_TEST_POSTGRES_URL`` and stops it
at the end. Each worker gets a database of its own on it (``postgres_url``), and each test or
module that writes one asks ``fresh_database`` for a database of its own.
"""

from __future__ import annotations

import contextlib
import functools
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import settings

from ddbcdc.local.postgres import TemporaryPostgres
from ddbcdc.migrate.run import upgrade
from ddbcdc.schema.mapping import TableMapping
from property_budget import QUICK, examples

pytest_plugins = ["stack_fixtures", "iam_fixtures"]

#: The URL of the run's PostgreSQL cluster, for the xdist workers (set by the main process).
SHARED_POSTGRES = "DDBCDC_TEST_POSTGRES_URL"
_CLUSTER = pytest.StashKey[TemporaryPostgres]()

# CI runs the same examples every time (a red build must be reproducible) and has no
# deadline (a loaded machine is slow, not wrong); locally hypothesis explores freely, and
# ``make check`` tries fewer examples (property_budget).
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("quick", max_examples=examples(100), deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")
elif QUICK:
    settings.load_profile("quick")

# The KCL daemon's JVM compiles with C1 only: it starts in about half the CPU time, and a
# daemon that waits on emulators has no use for C2's peak speed.
os.environ.setdefault("JAVA_TOOL_OPTIONS", "-XX:TieredStopAtLevel=1")


def pytest_configure(config: pytest.Config) -> None:
    """In the main process: start the run's PostgreSQL, unless nothing here can need it."""
    if hasattr(config, "workerinput") or os.environ.get("DATABASE_URL"):
        return
    if os.environ.get(SHARED_POSTGRES) or _unit_tests_only(config):
        return
    cluster = TemporaryPostgres().start()
    config.stash[_CLUSTER] = cluster
    os.environ[SHARED_POSTGRES] = cluster.url


def pytest_unconfigure(config: pytest.Config) -> None:
    cluster = config.stash.get(_CLUSTER, None)
    if cluster is not None:
        os.environ.pop(SHARED_POSTGRES, None)
        cluster.stop()


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under ``--dist loadgroup`` (pyproject.toml's default): the groups of ``scheduling``."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from scheduling import TierScheduling

    return TierScheduling(config, log)


def _unit_tests_only(config: pytest.Config) -> bool:
    """Whether every path pytest was given is under tests/unit (which needs no PostgreSQL)."""
    unit = Path(config.rootpath, "tests", "unit")
    here = config.invocation_params.dir
    paths = [(here / arg.split("::", 1)[0]).resolve() for arg in config.args]
    return bool(paths) and all(path.is_relative_to(unit) for path in paths)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """DATABASE_URL when given, else a database of this worker's own on the run's cluster.

    A test that needs the cluster when the main process did not start it (``pytest
    tests/unit/...``) gets a throwaway cluster of its session's own.
    """
    given = os.environ.get("DATABASE_URL")
    if given:
        yield given
        return
    shared = os.environ.get(SHARED_POSTGRES)
    if shared:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        with _fresh_database(shared, f"ddbcdc_{worker}") as url:
            yield url
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
