"""The public surface: ``ddbcdc.__all__`` is exactly what the package exposes, the import
paths the documentation shows keep working, and the exception tree drawn in ``errors.py``
is the tree of the classes."""

from __future__ import annotations

import importlib
import pkgutil
import re
import types

import pytest

import ddbcdc
from ddbcdc import errors

#: Private names that are public all the same.
INCLUDED_PRIVATE = {"__version__"}


def test_all_is_every_public_name_it_exposes_sorted() -> None:
    exposed = sorted(
        name
        for name, value in vars(ddbcdc).items()
        if (not name.startswith("_") or name in INCLUDED_PRIVATE)
        and not isinstance(value, types.ModuleType)  # subpackages, once imported
    )
    assert ddbcdc.__all__ == exposed


def test_every_error_a_caller_may_catch_is_exported() -> None:
    assert set(errors.__all__) <= set(ddbcdc.__all__)


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("ddbcdc.attributes", "ACCELERATED"),
        ("ddbcdc.attributes", "unmarshal"),
        ("ddbcdc.itemjson", "decode_attributes"),
        ("ddbcdc.itemjson", "encode_attributes"),
        ("ddbcdc.retrieval", "start_position"),
        ("ddbcdc.decode", "decode_record"),
        ("ddbcdc.decode", "ChangeRecord"),
    ],
)
def test_the_kept_import_paths_work(path: str, name: str) -> None:
    module = importlib.import_module(path)
    assert getattr(module, name) is not None
    assert name in module.__all__


@pytest.mark.parametrize(
    ("alias", "home"),
    [
        ("ddbcdc.attributes", "ddbcdc.decode.attributes"),
        ("ddbcdc.itemjson", "ddbcdc.decode.itemjson"),
        ("ddbcdc.retrieval", "ddbcdc.aws.retrieval"),
    ],
)
def test_an_alias_is_its_home_module(alias: str, home: str) -> None:
    """One module object: state set through one path (a monkeypatch) is seen through both."""
    assert importlib.import_module(alias) is importlib.import_module(home)


def _every_module() -> None:
    for info in pkgutil.walk_packages(ddbcdc.__path__, "ddbcdc."):
        importlib.import_module(info.name)


def _drawn_tree(doc: str) -> dict[str, str | None]:
    """Class name -> the name of its parent in the drawing (None for the root)."""
    parents: dict[str, str | None] = {}
    stack: list[str] = []
    for line in doc.splitlines():
        match = re.match(r"^ {4}((?:[│ ] {3})*)(?:[├└]── )?([A-Z]\w*Error)\b", line)
        if match is None:
            continue
        depth = len(match.group(1)) // 4 + (1 if "── " in line else 0)
        del stack[depth:]
        parents[match.group(2)] = stack[-1] if stack else None
        stack.append(match.group(2))
    return parents


def _real_tree() -> dict[str, str | None]:
    _every_module()
    tree: dict[str, str | None] = {"DdbcdcError": None}
    todo = [errors.DdbcdcError]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            assert sub.__name__ not in tree, f"two classes named {sub.__name__}"
            tree[sub.__name__] = cls.__name__
            todo.append(sub)
    return tree


def test_the_exception_tree_drawn_in_errors_is_every_ddbcdc_error() -> None:
    assert errors.__doc__ is not None
    drawn = _drawn_tree(errors.__doc__)
    assert "InputError" in drawn and drawn["DatabaseUnavailableError"] == "RetryableError"
    assert drawn == _real_tree()


def test_the_tree_parser_sees_a_misplaced_class() -> None:
    """The check above can fail: a class drawn under the wrong parent is seen."""
    assert errors.__doc__ is not None
    moved = errors.__doc__.replace(
        "│   └── DatabaseUnavailableError", "│   └── Decoy\n    ├── DatabaseUnavailableError"
    )
    assert _drawn_tree(moved)["DatabaseUnavailableError"] == "DdbcdcError"
