"""The command-line dispatcher."""

from __future__ import annotations

import argparse
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ddbcdc.cli import COMMANDS, build_parser, environment_fault, main


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


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["dlq", "list", "--limit", "-1"], "argument --limit: must be at least 1, not -1"),
        (["dlq", "list", "--limit", "0"], "argument --limit: must be at least 1, not 0"),
        (["dlq", "replay", "--batch-size", "x"], "argument --batch-size: not a whole number"),
        (["snapshot", "--parallel", "-1"], "argument --parallel: must be at least 1, not -1"),
        (["snapshot", "--parallel", "0"], "argument --parallel: must be at least 1, not 0"),
        (["snapshot", "--page-size", "0"], "argument --page-size: must be at least 1, not 0"),
        (["snapshot", "--segments", "0"], "argument --segments: must be at least 1, not 0"),
        (
            ["verify", "--segments", "1000001"],
            "argument --segments: must be at most 1,000,000, not 1,000,001",
        ),
        (["verify", "--max-rcu", "0"], "argument --max-rcu: must be above 0, not 0"),
        (["verify", "--max-items-per-second", "nan"], "must be above 0, not nan"),
        (["mapping", "infer", "--sample", "0"], "argument --sample: must be at least 1, not 0"),
        (["mapping", "infer", "--segments", "-2"], "argument --segments: must be at least 1"),
        (["snapshot", "--resume", "--restart"], "argument --restart: not allowed with argument"),
        # A negative limit made verify report a suspect that does not exist, as drift.
        (["verify", "--max-suspects", "-1"], "argument --max-suspects: must be at least 0, not -1"),
        (["verify", "--samples", "-1"], "argument --samples: must be at least 0, not -1"),
        (["verify", "--settle-timeout", "-1"], "argument --settle-timeout: must be at least 0"),
        (["verify", "--settle-timeout", "nan"], "argument --settle-timeout: must be at least 0"),
    ],
)
def test_a_count_below_one_is_a_usage_error_before_any_connection(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert says in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["setup", "--table", ""],
        ["teardown", "--table", " "],
        ["iam-policy", "--table", ""],
        ["snapshot", "--table", ""],
        ["verify", "--table", ""],
        ["export", "--table", "", "--bucket", "b"],
        ["load", "--table", ""],
        ["mapping", "infer", "--table", ""],
        ["dlq", "list", "--table", ""],
        ["apply", "--table", "", "-"],
        ["decode", "--table", "", "-"],
    ],
)
def test_an_empty_table_name_is_a_usage_error_not_the_default_table(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "argument --table: must name a table, not be empty" in capsys.readouterr().err


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ddbcdc.cli", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_file_system_fault_is_one_line_and_debug_adds_its_traceback(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder\n")
    state = f"{a_file}/state"
    plain = _cli("local", "--state-dir", state, "env")
    assert plain.returncode == 2
    assert plain.stderr.splitlines() == [
        f"ddbcdc local: NotADirectoryError: [Errno 20] Not a directory: '{state}/stack.json'"
    ]
    debug = _cli("--log-level", "DEBUG", "local", "--state-dir", state, "env")
    assert debug.returncode == 2 and "Traceback" in debug.stderr
    assert debug.stderr.splitlines()[-1] == plain.stderr.strip()


_CTRL_C_WHILE_IMPORTING = """
import importlib, os, signal, sys
chosen = importlib.import_module
def interrupted(name, package=None):
    if name.startswith("ddbcdc.commands."):  # Ctrl-C while the command's module loads
        os.kill(os.getpid(), signal.SIGINT)
    return chosen(name, package)
importlib.import_module = interrupted
from ddbcdc.cli import main
sys.exit(main(["snapshot", "--no-progress"]))
"""


def test_ctrl_c_before_the_command_runs_is_130_without_a_traceback() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CTRL_C_WHILE_IMPORTING],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stderr) == (130, "")


@pytest.mark.parametrize(
    ("redirect", "says"),
    [
        ("<&-", "ddbcdc decode: cannot read -: standard input is closed"),
        ("</dev/null >&-", "ddbcdc decode: cannot write to standard output: it is closed"),
    ],
)
def test_a_standard_stream_closed_at_start_is_one_line(redirect: str, says: str) -> None:
    shell = f'"$0" -m ddbcdc.cli decode - {redirect}'
    result = subprocess.run(
        ["sh", "-c", shell, sys.executable], capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stderr.splitlines()) == (2, [says])


def test_a_setting_that_does_not_parse_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DDBCDC_SOURCE", "bogus")
    monkeypatch.setenv("DDBCDC_TOMBSTONE_HORIZON", "banana")
    assert main(["iam-policy", "--account", "123456789012"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ddbcdc iam-policy: settings: "), lines
    assert "DDBCDC_SOURCE" in lines[0] and "DDBCDC_TOMBSTONE_HORIZON" in lines[0]
    assert "banana" not in lines[0]  # a setting's value may be a secret: never shown


@pytest.mark.parametrize("region", ["us_east_1", "../x", "us-east-1/", "-us"])
def test_a_region_that_cannot_be_one_is_refused_before_it_reaches_an_arn(
    region: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AWS_REGION", region)
    assert main(["iam-policy", "--account", "123456789012", "--stream", "s"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("ddbcdc iam-policy: settings: ") and "not an AWS region name" in line


def test_a_dotenv_that_is_not_utf8_is_one_line_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / ".env").write_bytes(
        b"DDBCDC_LOG_LEVEL=INFO\nDATABASE_URL=postgresql://u:p\xe9ss@h/db\n"
    )
    monkeypatch.chdir(tmp_path)
    assert main(["iam-policy", "--account", "123456789012"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "ddbcdc iam-policy: settings: .env: not UTF-8 text (invalid continuation byte at byte 51)"
    ]


def test_a_database_url_sqlalchemy_cannot_read_is_one_line_without_the_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:s3cr3t@127.0.0.1:fivefour/db")
    for argv in (["status"], ["dlq", "list"], ["apply", "-"]):
        assert main(argv) == 2
        lines = capsys.readouterr().err.splitlines()
        assert lines == [
            f"ddbcdc {argv[0]}: DATABASE_URL: its port is not a number "
            "(e.g. postgresql+psycopg://user@127.0.0.1:5432/db)"
        ], lines


def test_a_bug_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    import ddbcdc.commands.decode as decode

    def broken(args: argparse.Namespace) -> int:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(decode, "run", broken)
    with pytest.raises(ZeroDivisionError):
        main(["decode", "-"])


def test_the_boundary_names_only_environment_errors() -> None:
    assert environment_fault(FileNotFoundError(2, "No such file or directory", "/x")) == (
        "FileNotFoundError: [Errno 2] No such file or directory: '/x'"
    )
    assert environment_fault(ValueError("a bug")) is None
    import sqlalchemy as sa

    line = environment_fault(sa.exc.ArgumentError("Could not parse SQLAlchemy URL"))
    assert line == "PostgreSQL: ArgumentError: Could not parse SQLAlchemy URL"


@pytest.mark.parametrize("configure", ["ddbcdc.cli", "ddbcdc.worker.entry"])
def test_log_messages_are_one_line_of_printable_text(
    configure: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib
    import logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        root.handlers[:] = []
        importlib.import_module(configure).configure_logging("INFO")
        logging.getLogger("ddbcdc.t").warning("path %s", "a\nERROR forged\x00\x1b[2J")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\x00" not in err and "\x1b" not in err
    assert "path a\\x0aERROR forged\\x00\\x1b[2J" in err
