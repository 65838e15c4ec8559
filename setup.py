"""What pyproject.toml cannot state on its own; everything else is there.

- The optional C speedups: built when a C compiler and the Python headers are there; without
  them the install goes on, on the pure-Python path, with a warning.
- The repository keeps ``migrations/``, ``workers/`` and ``schemas/`` at its top; they are
  installed as the packages ``ddbcdc._migrations``, ``ddbcdc._workers`` and
  ``ddbcdc._schemas`` (found at run time by ``ddbcdc.resources``; package-data in
  pyproject.toml lists their files).
- The version, read once from ``ddbcdc.__version__`` (what ``ddbcdc --version`` prints).
- The license: setuptools 77 and later write it as an SPDX expression; the setuptools a fresh
  Python 3.11 virtualenv has (65) knows only the older field, so ``python setup.py build_ext``
  works with both.
- The long description: the README, its relative links made absolute for a package index.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import setuptools
from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).parent
REPOSITORY = "https://github.com/ddbcdc/ddbcdc"
#: Repository folders installed as packages (each subfolder too: setuptools ships only the
#: folders listed). pyproject.toml's package-data lists their files besides the modules.
FOLDERS = {
    "ddbcdc._migrations": "migrations",
    "ddbcdc._migrations.versions": "migrations/versions",
    "ddbcdc._workers": "workers",
    "ddbcdc._schemas": "schemas",
    "ddbcdc._schemas.tables": "schemas/tables",
    "ddbcdc._schemas.single_table": "schemas/single_table",
}


def read_version() -> str:
    """``__version__`` of src/ddbcdc/__init__.py, read without importing the package."""
    tree = ast.parse((HERE / "src" / "ddbcdc" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets
        ):
            return str(ast.literal_eval(node.value))
    raise RuntimeError("src/ddbcdc/__init__.py sets no __version__")


def long_description(version: str) -> str:
    """The README with relative links pointing at this version's files in the repository."""
    text = (HERE / "README.md").read_text(encoding="utf-8")
    base = f"{REPOSITORY}/blob/v{version}/"
    return re.sub(r"\]\((?!https?://|mailto:|#)([^)\s]+)\)", lambda m: f"]({base}{m[1]})", text)


def license_metadata() -> dict[str, str]:
    major = int(setuptools.__version__.split(".")[0])
    return {"license_expression" if major >= 77 else "license": "Apache-2.0"}


class BuildExt(build_ext):
    """Says clearly what a failed optional build means before setuptools goes on without it."""

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            sys.stderr.write(
                f"WARNING: ddbcdc's C speedups ({ext.name}) did not build ({exc}); ddbcdc is "
                "installed on its pure-Python decoding path, which is correct but 2 to 4 "
                "times slower. Install a C compiler and the Python headers (Debian: apt-get "
                "install gcc python3-dev) and reinstall to get them.\n"
            )
            raise


VERSION = read_version()

setup(
    version=VERSION,
    long_description=long_description(VERSION),
    long_description_content_type="text/markdown",
    **license_metadata(),
    packages=[*find_packages("src"), *FOLDERS],
    package_dir={"": "src", **FOLDERS},
    cmdclass={"build_ext": BuildExt},
    ext_modules=[
        Extension(
            "ddbcdc.decode._speedups",
            ["src/ddbcdc/decode/_speedups.c", "src/ddbcdc/decode/_speedups_values.c"],
            depends=["src/ddbcdc/decode/_speedups.h"],
            optional=True,
        ),
    ],
)
