"""The command-line dispatcher."""

from __future__ import annotations

import argparse
import importlib
import re
import subprocess
import sys

import pytest

from ddbcdc.cli import COMMANDS, build_parser, main


def test_every_command_is_registered_for_help() -> None:
    parser = build_parser()
    choices = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert list(choices) == list(COMMANDS)


def test_help_lists_every_command_with_its_summary() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ddbcdc.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    listed = [line.split()[0] for line in out.splitlines() if re.match(r"^    \S", line)]
    assert listed == list(COMMANDS)
    for summary in COMMANDS.values():
        assert " ".join(summary.split()[:4]) in " ".join(out.split())


def test_help_imports_no_command_module_and_nothing_heavy() -> None:
    code = (
        "import sys; from ddbcdc.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('ddbcdc.commands.') or "
        "m.split('.')[0] in {'sqlalchemy', 'boto3', 'botocore', 'alembic', 'psycopg', "
        "'prometheus_client', 'pydantic_settings', 'moto'}), file=sys.stderr)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stderr.strip() == "[]"
    assert "COMMAND" in result.stdout


@pytest.mark.parametrize("name", list(COMMANDS))
def test_summary_in_the_dispatcher_is_the_one_the_command_registers(name: str) -> None:
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    importlib.import_module(f"ddbcdc.commands.{name.replace('-', '_')}").register(subparsers)
    (action,) = subparsers._choices_actions
    assert action.dest == name
    assert action.help == COMMANDS[name]


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
