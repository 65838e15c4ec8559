"""The installed package carries what its commands read, and finds it as package data.

The files of ``migrations/``, ``workers/`` and ``schemas/`` are installed as packages
(``setup.py`` maps the folders, ``pyproject.toml`` lists their files) and read through
:mod:`ddbcdc.resources`; no shipped module builds a path from ``__file__``, which would point
into the checkout, or nowhere once installed from a wheel. ``.ci/package_check.py`` builds the
sdist and the wheel and runs the commands from them.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib.metadata
import subprocess
import sys
import tomllib
from importlib import resources as importlib_resources
from pathlib import Path

import pytest

import ddbcdc
from ddbcdc import resources
from ddbcdc.errors import ConfigurationError

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_CODE = ["src/ddbcdc", "migrations", "workers"]
#: Files of the mapped folders that only a checkout uses.
CHECKOUT_ONLY = {"migrations/alembic.ini"}  # for running the alembic CLI by hand


def _setup_folders() -> dict[str, str]:
    """``FOLDERS`` of setup.py (package -> repository folder), read without running it."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(node, ast.Assign):
            target = node.targets[0]
        if isinstance(target, ast.Name) and target.id == "FOLDERS" and node.value is not None:
            folders: dict[str, str] = ast.literal_eval(node.value)
            return folders
    raise AssertionError("setup.py defines no FOLDERS mapping of repository folders")


def _pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_no_shipped_module_builds_a_path_from_dunder_file() -> None:
    found = []
    for top in SHIPPED_CODE:
        for path in sorted((ROOT / top).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                named = (isinstance(node, ast.Name) and node.id == "__file__") or (
                    isinstance(node, ast.Attribute) and node.attr == "__file__"
                )
                if named:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")  # type: ignore[attr-defined]
    assert not found, (
        "files the installed package needs are package data read with ddbcdc.resources "
        f"(importlib.resources), never paths from __file__: {', '.join(found)}"
    )


@pytest.mark.parametrize("folder", ["migrations", "workers", "schemas"])
def test_every_file_of_a_mapped_folder_is_installed(folder: str) -> None:
    folders = _setup_folders()
    packages = {path: package for package, path in folders.items()}
    data = _pyproject()["tool"]["setuptools"]["package-data"]  # type: ignore[index]
    assert folder in packages, f"setup.py does not install {folder}/"
    missing = []
    for path in sorted((ROOT / folder).rglob("*")):
        relative = path.relative_to(ROOT).as_posix()
        if "__pycache__" in path.parts or path.suffix == ".pyc" or relative in CHECKOUT_ONLY:
            continue
        if path.is_dir():
            if relative not in packages:
                missing.append(f"{relative}/ (not in setup.py FOLDERS)")
            continue
        package = packages.get(path.parent.relative_to(ROOT).as_posix())
        if package is None:
            continue  # reported with its folder
        globs = data.get(package, [])
        if path.suffix != ".py" and not any(fnmatch.fnmatch(path.name, g) for g in globs):
            missing.append(f"{relative} (no package-data glob of {package} matches it)")
    assert not missing, f"not installed with the package: {missing}"


def test_the_folders_are_found_as_the_packages_the_build_maps_them_to() -> None:
    for package, folder in _setup_folders().items():
        if "/" not in folder:  # subfolders are reached through their folder
            assert Path(str(importlib_resources.files(package))) == ROOT / folder
    assert (resources.migrations_dir() / "env.py").is_file()
    assert sorted(p.name for p in (resources.migrations_dir() / "versions").glob("0001_*.py"))
    assert resources.workers_file("kcl.properties.template").is_file()
    assert resources.workers_file("logback.xml").is_file()
    assert resources.schemas_file("change-record.schema.json").is_file()
    assert (resources.shipped_mappings_dir() / "customers.json").is_file()


def test_a_missing_file_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match=r"workers/nope\.xml is missing"):
        resources.workers_file("nope.xml")


def test_the_version_has_one_source() -> None:
    project = _pyproject()["project"]
    assert "version" not in project  # type: ignore[operator]
    assert "version" in project["dynamic"]  # type: ignore[index]
    shown = subprocess.run(
        [sys.executable, "-m", "ddbcdc.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert shown == f"ddbcdc {ddbcdc.__version__}"
    assert importlib.metadata.version("ddbcdc") == ddbcdc.__version__


def test_the_metadata_an_index_shows() -> None:
    metadata = importlib.metadata.metadata("ddbcdc")
    assert metadata["License-Expression"] == "Apache-2.0"
    assert (ROOT / "LICENSE").read_text().startswith("\n                                 Apache")
    urls = dict(url.split(", ", 1) for url in metadata.get_all("Project-URL") or [])
    assert urls["Source"] == "https://github.com/ddbcdc/ddbcdc"
    assert "Changelog" in urls
    assert "Programming Language :: Python :: 3.11" in (metadata.get_all("Classifier") or [])
    # The README, its relative links made absolute (an index shows it outside the repository).
    description = metadata.json["description"]
    assert description.startswith("# ddbcdc")
    assert "](docs/" not in description
    base = f"https://github.com/ddbcdc/ddbcdc/blob/v{ddbcdc.__version__}/"
    assert f"]({base}docs/operations.md#settings)" in description
    assert f"## [{ddbcdc.__version__}]" in (ROOT / "CHANGELOG.md").read_text()


def test_the_head_revision_writers_check_is_alembics_head() -> None:
    from alembic.script import ScriptDirectory

    from ddbcdc.migrate.versions import HEAD_REVISION

    head = ScriptDirectory(str(resources.migrations_dir())).get_current_head()
    assert head == HEAD_REVISION
