"""kinesis-local installed with the real npm on first use, into the user cache, once."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from ddbcdc.errors import ConfigurationError
from ddbcdc.local.kinesis_package import KINESIS_LOCAL_VERSION, cache_dir, find_kinesis_local


def test_first_use_installs_the_pinned_release_into_the_cache(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    npm = shutil.which("npm")
    assert npm is not None, "npm is required (Debian: apt-get install nodejs npm)"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("DDBCDC_KINESIS_LOCAL", None)
    (tmp_path / "work").mkdir()
    with caplog.at_level("WARNING"):
        found = find_kinesis_local(environ=env, cwd=tmp_path / "work")
    assert found == cache_dir(env) / "node_modules" / "kinesis-local"
    assert json.loads((found / "package.json").read_text())["version"] == KINESIS_LOCAL_VERSION
    assert f"installing it with npm into {cache_dir(env)}" in caplog.text
    assert (found / "server.json").is_file()
    # Found again without npm (an empty PATH), and without a second message.
    caplog.clear()
    again = find_kinesis_local(environ={**env, "PATH": str(tmp_path)}, cwd=tmp_path / "work")
    assert again == found
    assert caplog.text == ""


def test_a_failing_npm_is_one_clear_line(tmp_path: Path) -> None:
    # npm on PATH, but the registry unreachable and nothing cached under this name.
    npm = shutil.which("npm")
    assert npm is not None
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "npm").symlink_to(npm)
    node = shutil.which("node")
    assert node is not None
    (tmp_path / "bin" / "node").symlink_to(node)
    env = {
        "PATH": str(tmp_path / "bin"),
        "HOME": str(tmp_path),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "npm_config_registry": "http://127.0.0.1:9/",
        "npm_config_cache": str(tmp_path / "npm-cache"),
        "npm_config_fetch_retries": "0",
    }
    with pytest.raises(ConfigurationError, match=r"npm install kinesis-local@.* failed \(exit"):
        find_kinesis_local(environ=env, cwd=tmp_path)
