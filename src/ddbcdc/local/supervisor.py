"""The detached process behind ``ddbcdc local up``: runs a :class:`LocalStack` until SIGTERM.

It writes ``stack.json`` into the state folder once every service is ready and removes it
after everything has stopped. Its children die with it (PR_SET_PDEATHSIG), so killing the
supervisor never leaves emulators behind; a throwaway PostgreSQL is stopped on SIGTERM.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from ddbcdc.local.stack import LocalStack, StackInfo

__all__ = ["STATE_FILE", "main", "write_state"]

log = logging.getLogger(__name__)

STATE_FILE = "stack.json"


def write_state(state_dir: Path, info: StackInfo) -> Path:
    """Write ``stack.json`` atomically; returns its path."""
    path = state_dir / STATE_FILE
    partial = path.with_suffix(".json.partial")
    partial.write_bytes(info.to_json())
    partial.replace(path)
    return path


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ddbcdc.local.supervisor")
    parser.add_argument("--state-dir", type=Path, default=Path(".local"))
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--no-bridge", action="store_true")
    parser.add_argument("--source", choices=["kinesis", "dynamodb-streams"], default="kinesis")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument(
        "--initial-position", choices=["TRIM_HORIZON", "LATEST"], default="TRIM_HORIZON"
    )
    parser.add_argument("--region", default="us-east-1")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stack in the foreground; exit 0 after SIGTERM/SIGINT, 1 if a service dies."""
    args = _parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level="INFO", format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    state_dir = args.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    stack = LocalStack(
        database_url=args.database_url,
        bridge=not args.no_bridge,
        source=args.source,
        shards=args.shards,
        initial_position=args.initial_position,
        region=args.region,
        log_dir=state_dir,
    )
    code = 0
    try:
        stack.start()
        info = dataclasses.replace(stack.info, pids={**stack.info.pids, "supervisor": os.getpid()})
        write_state(state_dir, info)
        log.info("local stack up; state in %s", state_dir / STATE_FILE)
        while not stop.wait(1.0):
            dead = [name for name, alive in stack.alive().items() if not alive]
            if dead:
                log.error("%s exited unexpectedly: stopping the local stack", ", ".join(dead))
                code = 1
                break
    finally:
        (state_dir / STATE_FILE).unlink(missing_ok=True)
        stack.stop()
        log.info("local stack stopped")
    return code


if __name__ == "__main__":
    sys.exit(main())
