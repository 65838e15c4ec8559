"""``ddbcdc local up|down|env|status``: the local AWS stack on this machine."""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ddbcdc.commands import count
from ddbcdc.local.kinesis_package import find_kinesis_local
from ddbcdc.local.processes import pid_alive, pid_alive_since, stop_pid
from ddbcdc.local.stack import StackInfo
from ddbcdc.local.supervisor import STATE_FILE

__all__ = ["register"]

_DESCRIPTION = """\
Run the local stack on 127.0.0.1, on free ports: moto (DynamoDB, DynamoDB Streams,
CloudWatch, S3), PostgreSQL (--database-url or $DATABASE_URL, else a throwaway cluster) and
the source: with --source kinesis (the default) kinesis-local (Kinesis over HTTP/1.1 and h2c)
and the bridge; with --source dynamodb-streams the DynamoDB Streams front.

The bridge exists only for the local stack: it copies every change of each table that has a
NEW_AND_OLD_IMAGES stream and the tag ddbcdc:local-kinesis-destination=<Kinesis stream ARN>
into that Kinesis stream, in the Kinesis Data Streams for DynamoDB record format. In AWS,
DynamoDB's managed Kinesis streaming destination does this job.

The front exists only for the local stack too: it serves moto's DynamoDB streams with shard
lineage (--shards per stream, split by key; POST <front>/rollover closes them and opens
children), which moto lacks. In AWS, DynamoDB Streams does this itself.

State and logs live in ./.local (stack.json, *.log)."""

_PID_FILE = "supervisor.pid"


def register(subparsers: Any) -> None:
    """Add the ``local`` command and its subcommands."""
    parser = subparsers.add_parser(
        "local",
        help="run the local AWS stack (moto, PostgreSQL, kinesis-local and bridge, or the "
        "DynamoDB Streams front)",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--state-dir", type=Path, default=Path(".local"), help=argparse.SUPPRESS)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = actions.add_parser("up", help="start the stack in the background, print its env")
    up.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="PostgreSQL to use (default: $DATABASE_URL, else a throwaway cluster)",
    )
    up.add_argument(
        "--temporary-postgres",
        action="store_true",
        help="start a throwaway PostgreSQL even when DATABASE_URL is set",
    )
    up.add_argument("--no-bridge", action="store_true", help="do not run the bridge")
    up.add_argument(
        "--source",
        choices=["kinesis", "dynamodb-streams"],
        default="kinesis",
        help="what the worker reads: kinesis (kinesis-local and the bridge, the default) or "
        "dynamodb-streams (the DynamoDB Streams front; `local env` sets DDBCDC_SOURCE)",
    )
    up.add_argument(
        "--shards", type=count, default=2, help="with dynamodb-streams: shards per stream (2)"
    )
    up.add_argument("--timeout", type=float, default=180.0, help="seconds to wait (180)")
    up.set_defaults(func=_up)
    actions.add_parser("down", help="stop the stack and remove its state").set_defaults(func=_down)
    actions.add_parser("env", help="print export lines for the running stack").set_defaults(
        func=_env
    )
    actions.add_parser("status", help="show whether each service runs").set_defaults(func=_status)


def _read_state(state_dir: Path) -> StackInfo | None:
    try:
        return StackInfo.from_json((state_dir / STATE_FILE).read_bytes())
    except FileNotFoundError:
        return None


def _supervisor_pid(state_dir: Path) -> int | None:
    """The supervisor's pid while it runs; None when the pid file names none, or a process
    that is not the one it was written for (a pid reused after a crash or reboot)."""
    path = state_dir / _PID_FILE
    try:
        pid = int(path.read_text().strip())
        return pid if pid_alive_since(pid, path.stat().st_mtime) else None
    except (FileNotFoundError, ValueError):
        return None


def _stack_pids(state_dir: Path, info: StackInfo) -> dict[str, int | None]:
    """Each process of the stack's state: its pid while it runs, else None."""
    written = (state_dir / STATE_FILE).stat().st_mtime
    return {n: p if pid_alive_since(p, written) else None for n, p in info.pids.items()}


def _print_env(info: StackInfo) -> None:
    for name, value in info.env.items():
        print(f"export {name}={shlex.quote(value)}")


def _up(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir
    pid = _supervisor_pid(state_dir)
    info = _read_state(state_dir)
    if pid is not None:
        if info is None:
            print(f"ddbcdc local: the stack is starting (pid {pid})", file=sys.stderr)
            return 1
        if info.source != args.source:
            print(
                f"ddbcdc local: a stack with --source {info.source} is up here: "
                f"`ddbcdc local down` first for one with --source {args.source}",
                file=sys.stderr,
            )
            return 2
        print("ddbcdc local: the stack is already up", file=sys.stderr)
        _print_env(info)
        return 0
    find_kinesis_local()  # found, or installed now in the foreground (with a message)
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    command = [sys.executable, "-m", "ddbcdc.local.supervisor", "--state-dir", str(state_dir)]
    if args.database_url and not args.temporary_postgres:
        command += ["--database-url", args.database_url]
    if args.no_bridge:
        command.append("--no-bridge")
    command += ["--source", args.source, "--shards", str(args.shards)]
    log_path = state_dir / "supervisor.log"
    with log_path.open("ab") as log_file:
        supervisor = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    (state_dir / _PID_FILE).write_text(f"{supervisor.pid}\n")
    info = _wait_for_state(state_dir, supervisor, args.timeout)
    if info is None:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
        print(f"ddbcdc local: the stack did not come up; {log_path}:\n{tail}", file=sys.stderr)
        stop_pid(supervisor.pid, grace=20)
        (state_dir / _PID_FILE).unlink(missing_ok=True)
        return 2
    print(f"ddbcdc local: up (logs in {state_dir}/*.log)", file=sys.stderr)
    _print_env(info)
    print('# use it with: eval "$(ddbcdc local env)"', file=sys.stderr)
    return 0


def _wait_for_state(
    state_dir: Path, supervisor: subprocess.Popen[bytes], timeout: float
) -> StackInfo | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = _read_state(state_dir)
        if info is not None:
            return info
        if supervisor.poll() is not None:
            return None
        time.sleep(0.2)
    return None


def _down(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir
    info = _read_state(state_dir)
    pid = _supervisor_pid(state_dir)
    children = {} if info is None else _stack_pids(state_dir, info)
    if pid is None:
        pid = children.get("supervisor")
    if pid is None and info is None:
        (state_dir / _PID_FILE).unlink(missing_ok=True)  # a stale one, if any
        print("ddbcdc local: the stack is not up", file=sys.stderr)
        return 0
    if pid is not None:
        # The supervisor stops its children and a throwaway PostgreSQL itself.
        stop_pid(pid, grace=30)
    for name, child in children.items():
        if name != "supervisor" and child is not None and pid_alive(child):
            stop_pid(child, grace=5)
    for name in (STATE_FILE, _PID_FILE, "bridge.ready"):
        (state_dir / name).unlink(missing_ok=True)
    print("ddbcdc local: down", file=sys.stderr)
    return 0


def _env(args: argparse.Namespace) -> int:
    info = _read_state(args.state_dir)
    if info is None:
        print("ddbcdc local: the stack is not up (run `ddbcdc local up`)", file=sys.stderr)
        return 1
    _print_env(info)
    return 0


def _status(args: argparse.Namespace) -> int:
    info = _read_state(args.state_dir)
    if info is None:
        print("ddbcdc local: the stack is not up")
        return 1
    all_up = True
    running = _stack_pids(args.state_dir, info)
    for name, pid in sorted(info.pids.items()):
        alive = running[name] is not None
        all_up = all_up and alive
        print(f"{name:<11} pid {pid:<8} {'running' if alive else 'NOT RUNNING'}")
    print(f"{'dynamodb':<11} {info.dynamodb_endpoint}  (also DynamoDB Streams, CloudWatch, S3)")
    if info.source == "dynamodb-streams":
        print(f"{'front':<11} {info.streams_endpoint}  (DynamoDB Streams, with shard lineage)")
    else:
        print(f"{'kinesis':<11} {info.kinesis_endpoint}  (h2c; TLS: {info.kinesis_tls_endpoint})")
    print(f"{'postgresql':<11} {info.database_url}")
    return 0 if all_up else 1
