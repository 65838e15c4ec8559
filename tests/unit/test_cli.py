"""The command-line dispatcher."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ddbcdc.cli import COMMANDS, build_parser, main


def test_every_command_is_registered_for_help() -> None:
    parser = build_parser()
    choices = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(choices) == set(COMMANDS)


def test_a_named_command_imports_only_its_own_module() -> None:
    code = (
        "import sys; from ddbcdc.cli import build_parser; "
        "build_parser(['--log-level', 'INFO', 'decode', '-']); "
        "print(sorted(m for m in sys.modules if m.startswith('ddbcdc.commands.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "['ddbcdc.commands.decode']"


def test_an_unknown_command_is_an_error_listing_them_all(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["no-such-command"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert all(f"'{name}'" in err for name in COMMANDS)
