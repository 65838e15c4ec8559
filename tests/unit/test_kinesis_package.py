"""Where the local stack finds kinesis-local: the setting, a checkout, PATH, the user cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ddbcdc.errors import ConfigurationError
from ddbcdc.local.kinesis_package import KINESIS_LOCAL_VERSION, cache_dir, find_kinesis_local

ROOT = Path(__file__).resolve().parents[2]


def package(folder: Path) -> Path:
    """A folder that looks like the kinesis-local npm package."""
    folder.mkdir(parents=True)
    (folder / "main.js").write_text("// kinesis-local\n")
    (folder / "server.json").write_text("{}\n")
    return folder


def bare_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment with an empty PATH (no npm, no kinesis-local) and its own cache."""
    (tmp_path / "bin").mkdir(exist_ok=True)
    return {"PATH": str(tmp_path / "bin"), "XDG_CACHE_HOME": str(tmp_path / "cache"), **extra}


def test_the_pinned_version_is_the_one_package_json_pins() -> None:
    pinned = json.loads((ROOT / "package.json").read_text())["dependencies"]["kinesis-local"]
    assert pinned == KINESIS_LOCAL_VERSION


def test_the_setting_wins(tmp_path: Path) -> None:
    chosen = package(tmp_path / "chosen")
    package(tmp_path / "work" / "node_modules" / "kinesis-local")
    env = bare_env(tmp_path, DDBCDC_KINESIS_LOCAL=str(chosen))
    assert find_kinesis_local(environ=env, cwd=tmp_path / "work") == chosen


def test_a_setting_naming_no_package_is_a_clear_error(tmp_path: Path) -> None:
    env = bare_env(tmp_path, DDBCDC_KINESIS_LOCAL=str(tmp_path))
    with pytest.raises(ConfigurationError, match=r"DDBCDC_KINESIS_LOCAL=.*no kinesis-local"):
        find_kinesis_local(environ=env, cwd=tmp_path)


def test_a_checkout_s_node_modules_is_found_from_a_subfolder(tmp_path: Path) -> None:
    found = package(tmp_path / "node_modules" / "kinesis-local")
    (tmp_path / "docs" / "deep").mkdir(parents=True)
    assert find_kinesis_local(environ=bare_env(tmp_path), cwd=tmp_path / "docs" / "deep") == found


def test_a_command_on_path_leads_to_its_package(tmp_path: Path) -> None:
    found = package(tmp_path / "global" / "lib" / "node_modules" / "kinesis-local")
    env = bare_env(tmp_path)
    command = tmp_path / "bin" / "kinesis-local"
    command.symlink_to(found / "main.js")  # what npm install --global makes
    command.chmod(0o755)
    (found / "main.js").chmod(0o755)
    assert find_kinesis_local(environ=env, cwd=tmp_path).resolve() == found.resolve()


def test_the_user_cache_is_used_without_npm(tmp_path: Path) -> None:
    env = bare_env(tmp_path)
    expected = tmp_path / "cache" / "ddbcdc" / f"kinesis-local-{KINESIS_LOCAL_VERSION}"
    assert cache_dir(env) == expected
    found = package(cache_dir(env) / "node_modules" / "kinesis-local")
    assert find_kinesis_local(environ=env, cwd=tmp_path) == found


def test_the_cache_defaults_to_the_home_folder(tmp_path: Path) -> None:
    assert cache_dir({"HOME": str(tmp_path)}).parent == tmp_path / ".cache" / "ddbcdc"


def test_nowhere_and_no_npm_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"npm is not found.*apt-get install nodejs npm"):
        find_kinesis_local(environ=bare_env(tmp_path), cwd=tmp_path)


def test_nowhere_without_install_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="kinesis-local is not installed"):
        find_kinesis_local(environ=bare_env(tmp_path), cwd=tmp_path, install=False)
