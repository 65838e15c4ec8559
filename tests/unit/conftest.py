"""The decode and attribute tests run twice: through the C speedups and in pure Python.

Under ``DDBCDC_SPEEDUPS=0`` the C path is switched off for the whole session, so they run in
pure Python only (the header says so).
"""

from __future__ import annotations

import os
from types import ModuleType

import pytest

from attribute_strategies import NOT_BUILT, speedup_hooks
from ddbcdc.decode import attributes
from ddbcdc.decode import record as decode

#: Test modules whose every test runs on both paths, as test_x[c] and test_x[python].
BOTH_PATHS = frozenset({"test_attributes.py", "test_decode.py", "test_decode_command.py"})


#: The decode paths this session can run (DDBCDC_SPEEDUPS=0: the pure-Python one alone).
PATHS = ["python"] if os.environ.get("DDBCDC_SPEEDUPS", "").strip() == "0" else ["c", "python"]


def pytest_report_header() -> str:
    return f"decode paths: {', '.join(PATHS)} (DDBCDC_SPEEDUPS={os.environ.get('DDBCDC_SPEEDUPS')})"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.path.name in BOTH_PATHS:
        metafunc.parametrize("decode_path", PATHS, indirect=True)


@pytest.fixture(autouse=True)
def decode_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """ "c": the C speedups (which must be there), "python": the pure-Python path alone."""
    path: str | None = getattr(request, "param", None)
    if path == "c" and not (attributes.ACCELERATED and decode._fast_build is not None):
        pytest.fail(NOT_BUILT)
    if path == "python":
        for module, name in speedup_hooks():
            monkeypatch.setattr(module, name, None)
    return path


@pytest.fixture(scope="module")
def speedups() -> ModuleType:
    """The C extension; fails (never skips) when it was not built."""
    from speedup_support import speedups_module

    return speedups_module()
