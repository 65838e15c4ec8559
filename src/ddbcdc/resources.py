"""Files the installed commands read: Alembic revisions, KCL files, schemas, the shipped mapping.

The repository keeps them in its top-level folders; the build maps each folder into the package
(``setup.py``), so a wheel carries them and an editable install reads the checkout's own::

    migrations/  ->  ddbcdc._migrations   Alembic env.py, script template, versions/
    workers/     ->  ddbcdc._workers      KCL properties template, logback config
    schemas/     ->  ddbcdc._schemas      change-record JSON Schema, tables/ (the demo's mapping),
                                          single_table/ (the single-table demo's)

They are found through :mod:`importlib.resources`, never through paths built from a module's
``__file__``. Java and Alembic open these files by path, so they must be on the file system (a
normal install is; a zip import is refused with a clear error).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal

from ddbcdc.errors import ConfigurationError

__all__ = [
    "Folder",
    "migrations_dir",
    "packaged_path",
    "schemas_file",
    "shipped_mappings_dir",
    "single_table_mappings_dir",
    "workers_file",
]

Folder = Literal["migrations", "workers", "schemas"]

#: Each top-level folder of the repository -> the package it is installed as.
_PACKAGES: dict[Folder, str] = {
    "migrations": "ddbcdc._migrations",
    "workers": "ddbcdc._workers",
    "schemas": "ddbcdc._schemas",
}


def packaged_path(folder: Folder, *parts: str) -> Path:
    """The path of ``folder/parts...`` as installed with the package.

    Raises:
        ConfigurationError: the installed package lacks it (a broken or partial install).
    """
    package = _PACKAGES[folder]
    shown = "/".join((folder, *parts))
    try:
        root = resources.files(package)
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            f"{shown}: this ddbcdc install has no {package} package; reinstall ddbcdc"
        ) from exc
    found = root.joinpath(*parts)
    if not isinstance(found, Path):
        raise ConfigurationError(
            f"{shown}: ddbcdc must be installed on the file system (not imported from a zip)"
        )
    if not found.exists():
        raise ConfigurationError(f"{shown} is missing from this ddbcdc install (looked at {found})")
    return found


def migrations_dir() -> Path:
    """The Alembic script folder (``env.py``, ``versions/``)."""
    return packaged_path("migrations")


def workers_file(name: str) -> Path:
    """A file the KCL MultiLangDaemon is given: ``kcl.properties.template``, ``logback.xml``."""
    return packaged_path("workers", name)


def schemas_file(name: str) -> Path:
    """A file of ``schemas/``: ``change-record.schema.json``."""
    return packaged_path("schemas", name)


def shipped_mappings_dir() -> Path:
    """The table mappings shipped with ddbcdc (``customers``, the demo's): ``schemas/tables``."""
    return packaged_path("schemas", "tables")


def single_table_mappings_dir() -> Path:
    """The routed mapping of the single-table ``shop`` (the demo's second act, ``ddbcdc load
    --model single-table``): ``schemas/single_table``."""
    return packaged_path("schemas", "single_table")
