"""Where the kinesis-local npm package is, and installing it on first use.

The local stack runs kinesis-local with Node.js. It is looked for, in this order:

1. ``DDBCDC_KINESIS_LOCAL``: a kinesis-local package folder (the one holding ``main.js``);
2. ``node_modules/kinesis-local`` in the working directory or a parent (a ddbcdc checkout after
   ``npm ci``, which ``make install`` runs);
3. a ``kinesis-local`` command on PATH (``npm install --global kinesis-local``);
4. the user's cache, ``$XDG_CACHE_HOME/ddbcdc`` (default ``~/.cache/ddbcdc``), where it is
   installed with npm the first time it is needed, at the version the repository pins
   (:data:`KINESIS_LOCAL_VERSION`, as in ``package.json``).
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from ddbcdc.errors import ConfigurationError

__all__ = ["KINESIS_LOCAL_VERSION", "SETTING", "cache_dir", "find_kinesis_local"]

log = logging.getLogger(__name__)

#: The kinesis-local release installed on first use; package.json pins the same one.
KINESIS_LOCAL_VERSION = "0.6.2"
SETTING = "DDBCDC_KINESIS_LOCAL"
_NPM_HINT = (
    "install Node.js 18+ and npm (Debian: apt-get install nodejs npm), or set "
    f"{SETTING} to a kinesis-local package folder"
)


def cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where kinesis-local is installed on first use: ``$XDG_CACHE_HOME/ddbcdc/...``."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".cache")
    return Path(base) / "ddbcdc" / f"kinesis-local-{KINESIS_LOCAL_VERSION}"


def find_kinesis_local(
    *, environ: Mapping[str, str] | None = None, cwd: Path | None = None, install: bool = True
) -> Path:
    """The kinesis-local package folder (see the module's docstring for the search order).

    Args:
        environ: the environment to read (default: this process's).
        cwd: where to start looking for ``node_modules`` (default: the working directory).
        install: install it into :func:`cache_dir` when it is found nowhere.

    Raises:
        ConfigurationError: ``DDBCDC_KINESIS_LOCAL`` names no kinesis-local package, or it is
            found nowhere and cannot be installed (no npm, npm failed, or ``install`` False).
    """
    env = os.environ if environ is None else environ
    configured = env.get(SETTING)
    if configured:
        package = Path(configured).expanduser()
        if not _is_package(package):
            raise ConfigurationError(
                f"{SETTING}={configured}: no kinesis-local package there (main.js, server.json)"
            )
        return package
    start = (cwd or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if _is_package(folder / "node_modules" / "kinesis-local"):
            return folder / "node_modules" / "kinesis-local"
    command = shutil.which("kinesis-local", path=env.get("PATH"))
    if command is not None and _is_package(Path(command).resolve().parent):
        return Path(command).resolve().parent
    cached = cache_dir(env) / "node_modules" / "kinesis-local"
    if _is_package(cached):
        return cached
    if not install:
        raise ConfigurationError(f"kinesis-local is not installed: {_NPM_HINT}")
    return _install(cache_dir(env), env)


def _is_package(folder: Path) -> bool:
    return (folder / "main.js").is_file() and (folder / "server.json").is_file()


def _install(prefix: Path, env: Mapping[str, str]) -> Path:
    """``npm install kinesis-local@<pinned>`` into ``prefix``, once, under a lock."""
    npm = shutil.which("npm", path=env.get("PATH"))
    if npm is None:
        raise ConfigurationError(
            f"kinesis-local is not installed and npm is not found: {_NPM_HINT}"
        )
    package = prefix / "node_modules" / "kinesis-local"
    try:
        prefix.mkdir(parents=True, exist_ok=True)
        with (prefix / ".install.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be installing it right now
            if _is_package(package):
                return package
            log.warning(
                "kinesis-local %s is not installed: installing it with npm into %s (once; "
                "%s chooses another copy)",
                KINESIS_LOCAL_VERSION,
                prefix,
                SETTING,
            )
            result = _run_npm(npm, prefix, env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigurationError(f"cannot install kinesis-local into {prefix}: {exc}") from exc
    if result.returncode != 0 or not _is_package(package):
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise ConfigurationError(
            f"npm install kinesis-local@{KINESIS_LOCAL_VERSION} into {prefix} failed "
            f"(exit {result.returncode}): {lines[-1] if lines else 'no output'}"
        )
    return package


def _run_npm(npm: str, prefix: Path, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    command = [
        npm,
        "install",
        "--prefix",
        str(prefix),
        "--no-save",
        "--no-audit",
        "--no-fund",
        "--prefer-offline",
        "--loglevel=error",
        f"kinesis-local@{KINESIS_LOCAL_VERSION}",
    ]
    return subprocess.run(
        command, capture_output=True, text=True, env=dict(env), timeout=600, check=False
    )
